"""Events: the list, the server-sent events stream, and the webhooks (admins only)."""
import select

from flask import Blueprint, Response, request, session, stream_with_context

from ..auth import ADMIN, API, LOCAL, USER, authenticate_token, user_required
from ..errors import ApiError
from ..validation import field, json_body, text
from . import service, webhooks

management_api = Blueprint("events", __name__, url_prefix="/api/management/v1")

MAX_LIMIT = 1000


def _types() -> set[str] | None:
    types = request.args.get("types")
    return set(types.split(",")) if types else None


def _int_arg(name: str, default: int, maximum: int) -> int:
    value = request.args.get(name, str(default))
    if not value.isdigit() or len(value) > 18 or int(value) > maximum:
        raise ApiError(400, f"'{name}' must be an integer from 0 to {maximum}")
    return int(value)


@management_api.get("/events")
@user_required
def list_events():
    """Events after `after` (an id), oldest first, at most `limit`."""
    types = _types()
    events = service.read_after(_int_arg("after", 0, 2**62),
                                _int_arg("limit", 100, MAX_LIMIT) or 1)
    return [e for e in events if types is None or e["type"] in types]


@management_api.get("/events/stream")
@user_required
def stream():
    types = _types()
    return event_stream(lambda event: types is None or event["type"] in types)


def event_stream(wanted, kinds=(USER, API, LOCAL)) -> Response:
    """The stream of events `wanted`, for the principal of this request (its token is checked
    again at each heartbeat)."""
    after = service.resume_point(request.headers.get("Last-Event-ID"), request.args.get("after"))
    token = _token()

    def still_allowed() -> bool:
        try:
            authenticate_token(token, kinds)
            return True
        except ApiError:
            return False

    body = service.open_stream(after, wanted, still_allowed, _client_gone())
    return Response(stream_with_context(body), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _client_gone():
    """Whether the client of this stream has closed its connection: an EventSource sends
    nothing after its request, so a socket that becomes readable has its end of stream (or
    bytes no stream client sends: the stream ends too). Under gunicorn only (its socket in
    the environ); elsewhere the heartbeat's write finds it."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def gone() -> bool:
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed under us
            return True
    return gone


def _token() -> str:
    """The request's bearer token, or the dashboard session's."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else session.get("token", "")


@management_api.post("/webhooks")
@user_required(minimum=ADMIN)
def create_webhook():
    body = json_body()
    webhook, secret = webhooks.create(text(body, "url", max_length=2048),
                                      text(body, "secret", required=False, max_length=256),
                                      field(body, "types", list, required=False))
    return {**webhooks.webhook_view(webhook), "secret": secret}, 201


@management_api.get("/webhooks")
@user_required(minimum=ADMIN)
def list_webhooks():
    return [webhooks.webhook_view(w) for w in webhooks.list_webhooks()]


@management_api.get("/webhooks/<webhook_id>")
@user_required(minimum=ADMIN)
def show_webhook(webhook_id):
    return webhooks.webhook_view(webhooks.get(webhook_id))


@management_api.delete("/webhooks/<webhook_id>")
@user_required(minimum=ADMIN)
def delete_webhook(webhook_id):
    webhooks.delete(webhook_id)
    return "", 204
