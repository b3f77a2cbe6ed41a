"""Server-signed JWTs (HS256) with expiry and revocation, and the decorators that require them.

Every token is also a row in `tokens`: revoking it (or rejecting its device) takes
effect on the next request, before the expiry in the JWT.

What a user's token may do is its user's role (`admin`, `read-only`), narrowed by the
token's scope if it has one (an API token's: `admin`, `read-only` or `metrics`), both read
on every request: demoting a user narrows its tokens at once.
"""
import base64
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps

import jwt
from flask import current_app, g, request
from sqlalchemy import ColumnElement, Select, bindparam, or_, select

from .database import db
from .errors import ApiError
from .models import Device, Token, User, utcnow

ISSUER = "tern"
DEVICE, USER, API = "device", "user", "api"
LOCAL = "local"  # the CLI working on a data directory, in-process

# Roles and scopes, from the widest: an admin changes anything, read-only reads the whole
# management API and dashboard, metrics reads /metrics only.
ADMIN, READ_ONLY, METRICS = "admin", "read-only", "metrics"
ROLES = (ADMIN, READ_ONLY)  # of users
SCOPES = (ADMIN, READ_ONLY, METRICS)  # of API tokens
_RANK = {METRICS: 0, READ_ONLY: 1, ADMIN: 2}


def within(scope: str, role: str) -> bool:
    """Whether `scope` allows no more than `role` does."""
    return _RANK[scope] <= _RANK[role]


@dataclass(frozen=True)
class Principal:
    kind: str
    subject: str  # device id or user id
    token_id: str
    name: str  # for the audit log
    role: str = ""  # of a user, LOCAL or API token: ADMIN, READ_ONLY or METRICS


def issue_token(kind: str, subject: str, seconds: int, name: str | None = None,
                auth_set_id: str | None = None) -> tuple[str, Token]:
    now = datetime.fromtimestamp(current_app.config["CLOCK"](), UTC)
    # Forget the subject's expired tokens, so that a device re-authenticating for years
    # leaves only its live ones.
    db.session.query(Token).filter(Token.subject == subject, Token.expires_at < now).delete(
        synchronize_session=False)
    row = Token(kind=kind, subject=subject, name=name, auth_set_id=auth_set_id,
                expires_at=now + timedelta(seconds=seconds))
    db.session.add(row)
    db.session.flush()
    claims = {"iss": ISSUER, "jti": row.id, "sub": subject, "kind": kind,
              "iat": int(now.timestamp()), "exp": int(row.expires_at.timestamp())}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm="HS256"), row


def revoke_tokens(subject: str, *, keep_auth_set: str | None = None) -> int:
    """Revoke every live token of a device or user; return how many. `keep_auth_set`: but
    those issued to that key of the device (its accepted one)."""
    rows = db.session.query(Token).filter(Token.subject == subject, Token.revoked_at.is_(None))
    if keep_auth_set is not None:
        rows = rows.filter(or_(Token.auth_set_id.is_(None), Token.auth_set_id != keep_auth_set))
    return rows.update({Token.revoked_at: utcnow()}, synchronize_session=False)


def _token_query(subject, *columns):
    """The token and its subject, as plain columns, by one primary-key lookup each."""
    return (select(Token.kind, Token.subject, Token.name, Token.revoked_at, *columns)
            .outerjoin(subject, subject.id == Token.subject)
            .where(Token.id == bindparam("jti")))


def device_token_query(anything_to_do: ColumnElement) -> Select:
    """A device token's lookup that also answers whether a poll can have anything for the
    device (`anything_to_do`, a boolean column correlated to the device)."""
    return _token_query(Device, Device.status, anything_to_do.label("anything_to_do"))


# Built once: these run on every request, a device's poll included.
_DEVICE_TOKEN = _token_query(Device, Device.status)
_USER_TOKEN = _token_query(User, User.email, User.role, Token.scope)


# What `jwt.encode` writes before the claims of every token issued here.
_HEADER = jwt.encode({}, "k" * 32, algorithm="HS256").partition(".")[0]


def _claims(token: str) -> dict:
    """The claims of a token this server issued, checked as `issue_token` wrote it: our
    header, our HMAC-SHA256 over it (compared in constant time), not expired. Nothing else
    signs with our secret, so claims with a valid MAC are ours, and complete. pyjwt's general
    decoder (any algorithm, any claims) checks each base64 character in Python: 70 us of
    every poll, against 13 us here."""
    signed, _, signature = token.rpartition(".")
    header, _, payload = signed.partition(".")
    mac = hmac.digest(current_app.config["SECRET_KEY"].encode(), signed.encode(), "sha256")
    if header != _HEADER or not hmac.compare_digest(
            signature.encode(), base64.urlsafe_b64encode(mac).rstrip(b"=")):
        raise ApiError(401, "invalid token")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if claims["exp"] <= current_app.config["CLOCK"]():
        raise ApiError(401, "token expired")
    return claims


def authenticate(kinds: tuple[str, ...], device_query=_DEVICE_TOKEN) -> Principal:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise ApiError(401, "missing bearer token")
    return authenticate_token(header[7:].strip(), kinds, device_query)


def authenticate_token(token: str, kinds: tuple[str, ...],
                       device_query=_DEVICE_TOKEN) -> Principal:
    """The principal of a token from a header or (the dashboard) a session cookie."""
    claims = _claims(token)
    if claims["kind"] not in kinds:
        raise ApiError(403, f"a {claims['kind']} token cannot be used here")
    device = claims["kind"] == DEVICE
    found = db.read_one(device_query if device else _USER_TOKEN, jti=claims["jti"])
    if (found is None or found.revoked_at is not None or found.subject != claims["sub"]
            or found.kind != claims["kind"]):
        raise ApiError(401, "token revoked")
    if device and found.status != "accepted":
        raise ApiError(401, "device not accepted")
    name, role = found.name or found.subject, ADMIN if found.kind == LOCAL else ""
    if found.kind in (USER, API):
        if found.email is None:
            raise ApiError(401, "user no longer exists")
        name = found.email
        role = found.role if found.scope is None or within(found.role, found.scope) \
            else found.scope
    if device:
        g.anything_to_do = getattr(found, "anything_to_do", None)
    return Principal(found.kind, found.subject, claims["jti"], name, role)


def require_role(principal: Principal, minimum: str) -> None:
    """Refuse (403) a principal whose role or scope is narrower than `minimum`."""
    if not within(minimum, principal.role):
        if principal.role == METRICS:
            raise ApiError(403, "a metrics token can only read /metrics")
        if minimum == ADMIN:
            raise ApiError(403, f"{principal.name} is {principal.role}: "
                                "it can read but not change anything")
        raise ApiError(403, f"{principal.name} is {principal.role}: this needs {minimum}")


def management_role() -> str:
    """What a management request needs by default: read-only to read, admin to change."""
    return READ_ONLY if request.method in ("GET", "HEAD") else ADMIN


def _requires(kinds: tuple[str, ...], device_query=_DEVICE_TOKEN,
              minimum: Callable[[], str] | None = None) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            g.principal = authenticate(kinds, device_query)
            if minimum is not None:
                require_role(g.principal, minimum())
            return view(*args, **kwargs)
        return wrapper
    return decorator


def device_required(view: Callable | None = None, *,
                    anything_to_do: ColumnElement | None = None):
    """Require a device token: `@device_required`, or
    `@device_required(anything_to_do=column)` to learn in the token's own lookup whether a
    poll can have anything for the device, into `g.anything_to_do`. A poll asks "anything
    to do?" that way: one round trip with its token check."""
    if view is not None:
        return _requires((DEVICE,))(view)
    return _requires((DEVICE,), device_token_query(anything_to_do))


def user_required(view: Callable | None = None, *, minimum: str | None = None):
    """Require a user's (or the local CLI's) token: `@user_required` needs read-only to read
    (GET) and admin to change anything; `@user_required(minimum=ROLE)` needs ROLE."""
    needs = management_role if minimum is None else (lambda: minimum)
    decorator = _requires((USER, API, LOCAL), minimum=needs)
    return decorator(view) if view is not None else decorator


def current_principal() -> Principal:
    return g.principal
