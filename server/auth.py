"""Server-signed JWTs (HS256) with expiry and revocation, and the decorators that require them.

Every token is also a row in `tokens`: revoking it (or rejecting its device) takes
effect on the next request, before the expiry in the JWT.
"""
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps

import jwt
from flask import current_app, g, request
from sqlalchemy import select

from .errors import ApiError
from .extensions import db
from .models import Device, Token, User, utcnow

ISSUER = "tern"
DEVICE, USER, API = "device", "user", "api"
LOCAL = "local"  # the CLI working on a data directory, in-process


@dataclass(frozen=True)
class Principal:
    kind: str
    subject: str  # device id or user id
    token_id: str
    name: str  # for the audit log


def issue_token(kind: str, subject: str, seconds: int,
                name: str | None = None) -> tuple[str, Token]:
    now = utcnow()
    # Forget the subject's expired tokens, so that a device re-authenticating for years
    # leaves only its live ones.
    db.session.query(Token).filter(Token.subject == subject, Token.expires_at < now).delete(
        synchronize_session=False)
    row = Token(kind=kind, subject=subject, name=name, expires_at=now + timedelta(seconds=seconds))
    db.session.add(row)
    db.session.flush()
    claims = {"iss": ISSUER, "jti": row.id, "sub": subject, "kind": kind,
              "iat": int(now.timestamp()), "exp": int(row.expires_at.timestamp())}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm="HS256"), row


def revoke_tokens(subject: str) -> int:
    """Revoke every live token of a device or user; return how many."""
    rows = db.session.query(Token).filter(Token.subject == subject, Token.revoked_at.is_(None))
    return rows.update({Token.revoked_at: utcnow()}, synchronize_session=False)


def authenticate(kinds: tuple[str, ...]) -> Principal:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise ApiError(401, "missing bearer token")
    return authenticate_token(header[7:].strip(), kinds)


def authenticate_token(token: str, kinds: tuple[str, ...]) -> Principal:
    """The principal of a token from a header or (the dashboard) a session cookie."""
    try:
        claims = jwt.decode(token, current_app.config["SECRET_KEY"],
                            algorithms=["HS256"], issuer=ISSUER,
                            options={"require": ["exp", "jti", "sub", "kind"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token expired") from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "invalid token") from None
    if claims["kind"] not in kinds:
        raise ApiError(403, f"a {claims['kind']} token cannot be used here")
    # One query for the token and its subject: this runs on every device poll.
    found = db.session.execute(
        select(Token, Device.status, User.email)
        .outerjoin(Device, Device.id == Token.subject)
        .outerjoin(User, User.id == Token.subject)
        .where(Token.id == claims["jti"])).first()
    if found is None or found[0].revoked_at is not None or found[0].subject != claims["sub"]:
        raise ApiError(401, "token revoked")
    row, device_status, email = found
    name = row.name or row.subject
    if row.kind == DEVICE and device_status != "accepted":
        raise ApiError(401, "device not accepted")
    if row.kind in (USER, API):
        if email is None:
            raise ApiError(401, "user no longer exists")
        name = email
    return Principal(row.kind, row.subject, row.id, name)


def _requires(*kinds: str) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            g.principal = authenticate(kinds)
            return view(*args, **kwargs)
        return wrapper
    return decorator


device_required = _requires(DEVICE)
user_required = _requires(USER, API, LOCAL)


def current_principal() -> Principal:
    return g.principal
