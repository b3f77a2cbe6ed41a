"""Where artifact bytes live: a directory (one host, or a shared filesystem) or an S3 bucket
(several hosts; devices download from the bucket through presigned URLs).

    ARTIFACT_STORAGE = None                               # a directory: ARTIFACTS_DIR
    ARTIFACT_STORAGE = {"backend": "s3", "bucket": "tern-artifacts", "prefix": "artifacts/",
                        "endpoint_url": "https://s3.example.com", "region_name": "eu-west-1"}

S3 credentials come from boto3's usual places (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
~/.aws, an instance role).
"""
from pathlib import Path
from typing import BinaryIO, Protocol

from flask import Flask, current_app


class Storage(Protocol):
    # Where uploads are staged while they are validated (None: the system's temporary dir);
    # `put` moves the staged file in.
    staging_dir: Path | None

    def put(self, key: str, staged: Path) -> None: ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def download_url(self, key: str, seconds: int) -> str | None:
        """A URL that fetches the object from the store itself for `seconds`, or None when
        the server serves the bytes (through its own signed link)."""


def init_app(app: Flask) -> None:
    settings = dict(app.config.get("ARTIFACT_STORAGE") or {"backend": "filesystem"})
    backend = settings.pop("backend")
    if backend == "filesystem":
        from .filesystem import FilesystemStorage
        storage = FilesystemStorage(Path(settings.get("path") or app.config["ARTIFACTS_DIR"]))
    elif backend == "s3":
        from .s3 import S3Storage
        storage = S3Storage(**settings)
    else:
        raise RuntimeError(f"unknown artifact storage backend {backend!r}")
    app.extensions["tern.storage"] = storage


def storage() -> Storage:
    return current_app.extensions["tern.storage"]
