"""Users: login (HTTP Basic → token), users, personal API tokens, the audit log."""
from flask import Blueprint, request

from .. import audit
from ..auth import LOCAL, current_principal, user_required
from ..errors import ApiError
from ..validation import field, json_body, text
from . import service

management_api = Blueprint("users", __name__, url_prefix="/api/management/v1")


@management_api.post("/auth/login")
def login():
    credentials = request.authorization
    if credentials is None or credentials.type != "basic":
        raise ApiError(401, "use HTTP Basic authentication with email and password")
    return {"token": service.login(credentials.username or "", credentials.password or "")}


@management_api.post("/users")
@user_required
def create_user():
    body = json_body()
    user = service.create_user(text(body, "email", max_length=254),
                               text(body, "password", max_length=1024))
    return {"id": user.id, "email": user.email, "created_at": user.created_at.isoformat()}, 201


@management_api.get("/users")
@user_required
def list_users():
    return service.list_users()


def _own_user_id() -> str:
    principal = current_principal()
    if principal.kind == LOCAL:
        raise ApiError(400, "the local CLI has no user: personal tokens belong to users")
    return principal.subject


@management_api.post("/tokens")
@user_required
def create_token():
    body = json_body()
    seconds = field(body, "expires_in", int, required=False, default=365 * 24 * 3600)
    return service.create_api_token(_own_user_id(), text(body, "name", max_length=100),
                                    seconds), 201


@management_api.get("/tokens")
@user_required
def list_tokens():
    return service.list_api_tokens(_own_user_id())


@management_api.delete("/tokens/<token_id>")
@user_required
def revoke_token(token_id):
    service.revoke_api_token(_own_user_id(), token_id)
    return "", 204


@management_api.get("/audit")
@user_required
def audit_log():
    limit = min(request.args.get("limit", 100, type=int), 1000)
    # within a 64-bit integer, the most either database takes (a larger one was a 500)
    offset = min(max(request.args.get("offset", 0, type=int), 0), 2**63 - 1)
    return audit.entries(max(limit, 1), offset)
