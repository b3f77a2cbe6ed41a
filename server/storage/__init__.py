"""Where artifact bytes live: a directory (one host, or a shared filesystem) or an S3 bucket
(several hosts; devices download from the bucket through presigned URLs).

    ARTIFACT_STORAGE = None                               # a directory: ARTIFACTS_DIR
    ARTIFACT_STORAGE = {"backend": "s3", "bucket": "tern-artifacts", "prefix": "artifacts/",
                        "endpoint_url": "https://s3.example.com", "region_name": "eu-west-1"}

S3 credentials come from boto3's usual places (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
~/.aws, an instance role).
"""
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from flask import Flask, current_app

STAGED_PREFIX = ".upload-"


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
    sweep_staged_uploads(storage)


def storage() -> Storage:
    return current_app.extensions["tern.storage"]


@contextmanager
def staged_upload(store: Storage) -> Iterator[BinaryIO]:
    """A new file to stage an upload in, removed at the end. It is locked (`flock`) while
    its upload runs, so that `sweep_staged_uploads` tells the files of uploads that died
    with their process (`kill -9`) from those still running, in another worker or in
    another instance sharing the directory."""
    while True:
        staged = tempfile.NamedTemporaryFile(dir=store.staging_dir, prefix=STAGED_PREFIX,
                                             delete=False)
        fcntl.flock(staged.fileno(), fcntl.LOCK_EX)
        if os.fstat(staged.fileno()).st_nlink:
            break
        staged.close()  # a sweep removed it between its creation and the lock
    try:
        with staged:
            yield staged
    finally:
        Path(staged.name).unlink(missing_ok=True)


def sweep_staged_uploads(store: Storage) -> int:
    """Remove staged uploads whose process died (no lock held); return how many. Only in
    a staging directory of our own: the system's temporary directory (S3) is not ours to
    sweep, and its own cleaner runs there."""
    if store.staging_dir is None:
        return 0
    removed = 0
    for path in store.staging_dir.glob(f"{STAGED_PREFIX}*"):
        try:
            descriptor = os.open(path, os.O_RDWR)
        except OSError:  # gone meanwhile
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
            removed += 1
        except BlockingIOError:
            pass  # an upload in progress
        finally:
            os.close(descriptor)
    return removed
