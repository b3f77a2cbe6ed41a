"""Users: login (HTTP Basic → token), users and their roles, personal API tokens, the audit
log. Reading needs read-only, changing users admin; a user's own API tokens need read-only."""
from flask import Blueprint, request

from .. import audit
from ..auth import LOCAL, READ_ONLY, current_principal, user_required
from ..errors import ApiError
from ..validation import field, json_body, text
from . import service

management_api = Blueprint("users", __name__, url_prefix="/api/management/v1")


@management_api.post("/auth/login")
def login():
    credentials = request.authorization
    if credentials is None or credentials.type != "basic":
        raise ApiError(401, "use HTTP Basic authentication with email and password")
    return {"token": service.login(credentials.username or "", credentials.password or "",
                                   request.remote_addr or "")}


@management_api.post("/users")
@user_required
def create_user():
    body = json_body()
    user = service.create_user(text(body, "email", max_length=254),
                               text(body, "password", max_length=1024),
                               text(body, "role", required=False, default="admin",
                                    max_length=16))
    return service.user_view(user), 201


@management_api.get("/users")
@user_required
def list_users():
    return service.list_users()


@management_api.patch("/users/<user>")
@user_required
def update_user(user):
    """Set a user's password and/or role; `user` is its id or email."""
    body = json_body()
    password = text(body, "password", required=False, max_length=1024)
    role = text(body, "role", required=False, max_length=16)
    if password is None and role is None:
        raise ApiError(400, "give 'password' or 'role'")
    return service.user_view(service.update_user(user, password, role))


@management_api.delete("/users/<user>")
@user_required
def delete_user(user):
    service.delete_user(user)
    return "", 204


@management_api.delete("/users/<user>/tokens")
@user_required
def revoke_user_tokens(user):
    return {"revoked": service.revoke_user_tokens(user)}


def _own_user_id() -> str:
    principal = current_principal()
    if principal.kind == LOCAL:
        raise ApiError(400, "the local CLI has no user: personal tokens belong to users")
    return principal.subject


@management_api.post("/tokens")
@user_required(minimum=READ_ONLY)
def create_token():
    body = json_body()
    seconds = field(body, "expires_in", int, required=False, default=365 * 24 * 3600)
    _own_user_id()
    return service.create_api_token(current_principal(), text(body, "name", max_length=100),
                                    seconds, text(body, "scope", required=False,
                                                  max_length=16)), 201


@management_api.get("/tokens")
@user_required
def list_tokens():
    return service.list_api_tokens(_own_user_id())


@management_api.delete("/tokens/<token_id>")
@user_required(minimum=READ_ONLY)
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
