"""Users, their roles and passwords (scrypt), and their tokens: login tokens and personal
API tokens."""
import base64
import hashlib
import hmac
import os
import re

from flask import current_app
from sqlalchemy import or_

from .. import audit
from ..auth import ADMIN, API, ROLES, SCOPES, USER, Principal, issue_token, revoke_tokens, within
from ..database import db
from ..errors import ApiError
from ..models import Token, User, utcnow
from . import throttle

EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
MAX_EMAIL = 254
MIN_PASSWORD = 8
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
MAX_API_TOKEN_SECONDS = 5 * 365 * 24 * 3600


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return "scrypt$" + base64.b64encode(salt + digest).decode()


def check_password(password: str, stored: str) -> bool:
    raw = base64.b64decode(stored.removeprefix("scrypt$"))
    salt, digest = raw[:16], raw[16:]
    return hmac.compare_digest(hashlib.scrypt(password.encode(), salt=salt, **SCRYPT), digest)


# What an unknown email's password is checked against, so that the answer takes as long as
# for a known one (else the time tells which emails exist). A fixed one: made on first use,
# a worker's first such answer would take two hashes. Its password was random and dropped.
UNKNOWN_USER_HASH = ("scrypt$I4P/DNYB6b1RjA2vTUgIq/ZFjoxRamaSvvxNoVrY7T2hJXq+T/1Qp/V42YF0VTa0tCHq"
                     "i1IMmQhmuGm8bmykouOOnO/5Qswli9ZWeCcIKt8=")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ApiError(400, f"role must be one of {', '.join(ROLES)}")
    return role


def _check_password_length(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ApiError(400, f"password must have at least {MIN_PASSWORD} characters")
    return password


def create_user(email: str, password: str, role: str = ADMIN) -> User:
    if not EMAIL.fullmatch(email):
        raise ApiError(400, "email must look like name@domain")
    _check_password_length(password)
    _check_role(role)
    if db.session.query(User).filter_by(email=email).first():
        raise ApiError(409, f"user {email} already exists")
    user = User(email=email, password_hash=hash_password(password), role=role)
    db.session.add(user)
    db.session.flush()
    audit.record("user.create", user.id, email=email, role=role)
    db.session.commit()
    return user


def login(email: str, password: str, source: str) -> str:
    """A login token for the right email and password from `source` (the client's address);
    429 while that account or source has failed too often (see `throttle`)."""
    if len(email) > MAX_EMAIL or "\0" in email + password:  # no user has such an email
        raise ApiError(401, "wrong email or password")
    throttle.check(email, source)
    user = db.session.query(User).filter_by(email=email).first()
    matches = check_password(password, user.password_hash if user else UNKNOWN_USER_HASH)
    if user is None or not matches:
        throttle.record_failure(email, source)
        audit.record("user.login_failed", email, actor=f"source:{source}")
        db.session.commit()
        raise ApiError(401, "wrong email or password")
    throttle.forget_failures(email, source)
    token, _ = issue_token(USER, user.id, current_app.config["USER_TOKEN_SECONDS"])
    db.session.commit()
    return token


def logout(token_id: str) -> None:
    """Revoke one login token (the dashboard's session), leaving the user's others alone."""
    row = db.session.get(Token, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()


def user_view(user: User) -> dict:
    return {"id": user.id, "email": user.email, "role": user.role,
            "created_at": user.created_at.isoformat()}


def list_users() -> list[dict]:
    return [user_view(u) for u in db.session.query(User).order_by(User.email)]


def get_user(id_or_email: str) -> User:
    user = db.session.query(User).filter(
        or_(User.id == id_or_email, User.email == id_or_email)).first()
    if user is None:
        raise ApiError(404, f"no user {id_or_email}")
    return user


def _keep_an_admin(user: User, what: str) -> None:
    """Refuse to leave no admin: no one could then manage users through the API."""
    if user.role == ADMIN and db.session.query(User).filter_by(role=ADMIN).count() == 1:
        raise ApiError(409, f"{user.email} is the last admin and cannot be {what}")


def update_user(id_or_email: str, password: str | None, role: str | None) -> User:
    """Set a user's password (which ends its login sessions, not its API tokens) or role."""
    user = get_user(id_or_email)
    if password is not None:
        user.password_hash = hash_password(_check_password_length(password))
        db.session.query(Token).filter(
            Token.subject == user.id, Token.kind == USER, Token.revoked_at.is_(None)
        ).update({Token.revoked_at: utcnow()}, synchronize_session=False)
        audit.record("user.password", user.id, email=user.email)
    if role is not None and role != user.role:
        if _check_role(role) != ADMIN:
            _keep_an_admin(user, "demoted")
        user.role = role
        audit.record("user.role", user.id, email=user.email, role=role)
    db.session.commit()
    return user


def delete_user(id_or_email: str) -> None:
    """Delete a user and revoke every token of theirs."""
    user = get_user(id_or_email)
    _keep_an_admin(user, "deleted")
    revoked = revoke_tokens(user.id)
    db.session.delete(user)
    audit.record("user.delete", user.id, email=user.email, tokens_revoked=revoked)
    db.session.commit()


def revoke_user_tokens(id_or_email: str) -> int:
    """Revoke every live token of a user, login sessions and API tokens alike."""
    user = get_user(id_or_email)
    revoked = revoke_tokens(user.id)
    audit.record("user.revoke_tokens", user.id, email=user.email, count=revoked)
    db.session.commit()
    return revoked


def create_api_token(principal: Principal, name: str, seconds: int, scope: str | None) -> dict:
    """A personal API token of the logged-in user, with a scope no wider than their role
    (by default their role). Only a login (a password) makes one: a stolen API token
    cannot mint itself successors."""
    if principal.kind != USER:
        raise ApiError(403, "API tokens are made with a login token (a password login), "
                            "not with another API token")
    if not 0 < seconds <= MAX_API_TOKEN_SECONDS:
        raise ApiError(400, f"expires_in must be 1 to {MAX_API_TOKEN_SECONDS} seconds")
    scope = principal.role if scope is None else scope
    if scope not in SCOPES:
        raise ApiError(400, f"scope must be one of {', '.join(SCOPES)}")
    if not within(scope, principal.role):
        raise ApiError(403, f"{principal.name} is {principal.role}: a token cannot have "
                            f"scope {scope}")
    token, row = issue_token(API, principal.subject, seconds, name=name)
    row.scope = scope
    audit.record("token.create", row.id, name=name, scope=scope)
    db.session.commit()
    return {**token_view(row), "token": token}


def list_api_tokens(user_id: str) -> list[dict]:
    rows = db.session.query(Token).filter_by(subject=user_id, kind=API).order_by(Token.created_at)
    return [token_view(row) for row in rows]


def revoke_api_token(user_id: str, token_id: str) -> None:
    row = db.session.get(Token, token_id)
    if row is None or row.subject != user_id or row.kind != API:
        raise ApiError(404, f"no API token {token_id}")
    row.revoked_at = row.revoked_at or utcnow()
    audit.record("token.revoke", token_id)
    db.session.commit()


def token_view(row: Token) -> dict:
    return {"id": row.id, "name": row.name, "scope": row.scope,
            "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat(),
            "revoked": row.revoked_at is not None}
