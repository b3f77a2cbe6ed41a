"""Configuration: defaults here, overridden by `create_app(config)` or the data directory."""
import json
import os
import secrets
import time
from pathlib import Path

MIB = 1 << 20


class Config:
    DATABASE_URL = "sqlite:///tern.db"
    # Database connections each pool keeps open per process: at least the threads that may
    # use them at once (`serve` sets its --threads), or the ones beyond are closed when
    # returned and opened again for the next request.
    DATABASE_POOL_SIZE = 5
    ARTIFACTS_DIR = "artifacts"
    ARTIFACT_STORAGE = None  # filesystem in ARTIFACTS_DIR; see server.storage for S3
    # Signs JWTs and download URLs; `tern-server init` keeps one in the data directory.
    SECRET_KEY = ""
    DEVICE_TOKEN_SECONDS = 7 * 24 * 3600
    # Seconds since the epoch, for issuing tokens and checking their expiry: tests set one
    # that they move forward instead of sleeping until a token expires.
    CLOCK = time.time
    USER_TOKEN_SECONDS = 12 * 3600
    DOWNLOAD_URL_SECONDS = 24 * 3600
    # Behind nginx: answer a checked download link with `X-Accel-Redirect: <prefix><id>` and
    # let nginx send the file (an `internal` location aliased to the artifacts directory).
    ACCEL_REDIRECT_PREFIX = ""
    MAX_JSON_BYTES = 1 * MIB  # Mender's API payload limit; deployment logs included
    MAX_ARTIFACT_BYTES = 10 * 1024 * MIB  # Mender's artifact limit
    # Flask's own cap for every body; artifact uploads raise it for their request only.
    MAX_CONTENT_LENGTH = MAX_JSON_BYTES
    # The dashboard's session cookie (it holds the login token) and its forms' CSRF tokens.
    SESSION_COOKIE_NAME = "tern_session"
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_CHECK_DEFAULT = False  # only the dashboard's forms; the APIs use bearer tokens
    WTF_CSRF_TIME_LIMIT = None  # as long as the session


def data_dir_config(data_dir: str | os.PathLike) -> dict:
    """The configuration of a data directory made by `tern-server init`.

    Several instances behind a load balancer each get a copy of the same `config.json` and
    `secret.key`; the database and the artifact storage (`artifacts_dir` on a shared
    filesystem, or `artifact_storage` naming an S3 bucket) are what they share.
    """
    root = Path(data_dir).resolve()
    settings = json.loads((root / "config.json").read_text())
    return {
        "DATA_DIR": str(root),
        "DATABASE_URL": settings.get("database_url") or f"sqlite:///{root / 'tern.db'}",
        "ARTIFACTS_DIR": str(root / settings.get("artifacts_dir", "artifacts")),
        "ARTIFACT_STORAGE": settings.get("artifact_storage"),
        "ACCEL_REDIRECT_PREFIX": settings.get("accel_redirect_prefix", ""),
        "SECRET_KEY": (root / "secret.key").read_text().strip(),
    }


def new_secret() -> str:
    return secrets.token_urlsafe(48)
