"""Users, their passwords (scrypt) and their tokens: login tokens and personal API tokens."""
import base64
import hashlib
import hmac
import os
import re

from flask import current_app

from .. import audit
from ..auth import API, USER, issue_token
from ..database import db
from ..errors import ApiError
from ..models import Token, User, utcnow

EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
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


def create_user(email: str, password: str) -> User:
    if not EMAIL.fullmatch(email):
        raise ApiError(400, "email must look like name@domain")
    if len(password) < MIN_PASSWORD:
        raise ApiError(400, f"password must have at least {MIN_PASSWORD} characters")
    if db.session.query(User).filter_by(email=email).first():
        raise ApiError(409, f"user {email} already exists")
    user = User(email=email, password_hash=hash_password(password))
    db.session.add(user)
    db.session.flush()
    audit.record("user.create", user.id, email=email)
    db.session.commit()
    return user


def login(email: str, password: str) -> str:
    user = db.session.query(User).filter_by(email=email).first()
    if user is None or not check_password(password, user.password_hash):
        raise ApiError(401, "wrong email or password")
    token, _ = issue_token(USER, user.id, current_app.config["USER_TOKEN_SECONDS"])
    db.session.commit()
    return token


def logout(token_id: str) -> None:
    """Revoke one login token (the dashboard's session), leaving the user's others alone."""
    row = db.session.get(Token, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()


def list_users() -> list[dict]:
    return [{"id": u.id, "email": u.email, "created_at": u.created_at.isoformat()}
            for u in db.session.query(User).order_by(User.email)]


def create_api_token(user_id: str, name: str, seconds: int) -> dict:
    if not 0 < seconds <= MAX_API_TOKEN_SECONDS:
        raise ApiError(400, f"expires_in must be 1 to {MAX_API_TOKEN_SECONDS} seconds")
    token, row = issue_token(API, user_id, seconds, name=name)
    audit.record("token.create", row.id, name=name)
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
    return {"id": row.id, "name": row.name, "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat(),
            "revoked": row.revoked_at is not None}
