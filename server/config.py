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
    # PEM public keys (paths; relative ones from DATA_DIR): when any is set, an upload must
    # be signed with one of them (rotation: configure the new key beside the old one).
    ARTIFACT_VERIFY_KEYS = []
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
    # Behind proxies that end the TCP connection (nginx's `http`): how many of them append to
    # X-Forwarded-For, so that the client's address (login throttling, the request log) is
    # the one they saw, not theirs. 0: no proxy, the header is ignored (a client could forge it).
    FORWARDED_FOR_HOPS = 0
    MAX_JSON_BYTES = 1 * MIB  # Mender's API payload limit; deployment logs included
    MAX_ARTIFACT_BYTES = 10 * 1024 * MIB  # Mender's artifact limit
    # Flask's own cap for every body; artifact uploads raise it for their request only.
    MAX_CONTENT_LENGTH = MAX_JSON_BYTES
    # Device admission: what unauthenticated auth requests may store (server/README.md,
    # "Device admission"). A new key (a new device brings one) counts against its source
    # address: at most NEW_KEYS_PER_SOURCE in any NEW_KEYS_WINDOW_SECONDS.
    MAX_IDENTITY_BYTES = 4096  # the identity as canonical JSON
    MAX_IDENTITY_ATTRIBUTES = 32
    MAX_PENDING_KEYS_PER_DEVICE = 4  # keys awaiting a decision on one device
    MAX_PENDING_DEVICES = 10000
    NEW_KEYS_PER_SOURCE = 100
    NEW_KEYS_WINDOW_SECONDS = 60
    # The dashboard's session cookie (it holds the login token) and its forms' CSRF tokens.
    SESSION_COOKIE_NAME = "tern_session"
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_CHECK_DEFAULT = False  # only the dashboard's forms; the APIs use bearer tokens
    WTF_CSRF_TIME_LIMIT = None  # as long as the session
    # Events (server/README.md, "Events"): kept this long, then deleted.
    EVENT_RETENTION_DAYS = 7
    # Server-sent event streams open at once per process: each holds a worker thread, so
    # `serve` keeps it to its --threads but one (at least 1) unless config.json sets it.
    EVENT_STREAMS = 2
    EVENT_STREAM_SECONDS = 300  # then the client reconnects (EventSource does on its own)
    EVENT_POLL_SECONDS = 1.0  # how often a stream looks for new events
    WEBHOOK_BACKOFF_SECONDS = 2  # the first retry's wait; doubles up to 10 minutes


# Settings `config.json` may give in lower case, e.g. {"max_pending_devices": 50000}.
ADMISSION_SETTINGS = ("MAX_IDENTITY_BYTES", "MAX_IDENTITY_ATTRIBUTES",
                      "MAX_PENDING_KEYS_PER_DEVICE", "MAX_PENDING_DEVICES",
                      "NEW_KEYS_PER_SOURCE", "NEW_KEYS_WINDOW_SECONDS")
EVENT_SETTINGS = ("EVENT_RETENTION_DAYS", "EVENT_STREAMS", "EVENT_STREAM_SECONDS",
                  "WEBHOOK_BACKOFF_SECONDS")


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
        "FORWARDED_FOR_HOPS": settings.get("forwarded_for_hops", 0),
        "ARTIFACT_VERIFY_KEYS": settings.get("artifact_verify_keys", []),
        "SECRET_KEY": (root / "secret.key").read_text().strip(),
        **{name: int(settings[name.lower()]) for name in (*ADMISSION_SETTINGS, *EVENT_SETTINGS)
           if name.lower() in settings},
    }


def new_secret() -> str:
    return secrets.token_urlsafe(48)
