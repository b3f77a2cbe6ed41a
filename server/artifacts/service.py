"""Artifacts: streaming, validated uploads into the storage, and the devices' download URLs.

An upload is written to a staged file while `ArtifactReader` reads the same
bytes (a tee), so the artifact is validated in one pass, in flat memory; only a
valid artifact is put into the storage (`server.storage`), under its id, never under
its name.
"""
import hashlib
import hmac
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from flask import current_app, url_for
from sqlalchemy import bindparam, select

from artifact import ArtifactError, ArtifactHeader, ArtifactReader, PayloadHeader
from artifact.signing import load_key_file

from .. import audit
from ..database import db
from ..errors import ApiError
from ..models import Artifact, DeviceDeployment
from ..storage import storage

CHUNK = 1 << 20
# What a name may not contain: path separators, parent references, control characters.
UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|^\.\.?$|\.\.")


class _Tee:
    """Reads from `source`, copying every byte to `sink`, counting and hashing it."""

    def __init__(self, source: BinaryIO, sink: BinaryIO):
        self.source, self.sink = source, sink
        self.size = 0
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sink.write(data)
        self.size += len(data)
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def check_name(name: str) -> None:
    if UNSAFE_NAME.search(name):
        raise ApiError(400, f"artifact name {name!r} contains a path or control character")


def upload(stream: BinaryIO, description: str = "") -> Artifact:
    keys = [load_key_file(p) for p in current_app.config.get("ARTIFACT_VERIFY_KEYS", [])]
    store = storage()
    temporary = tempfile.NamedTemporaryFile(dir=store.staging_dir, prefix=".upload-",
                                            delete=False)
    try:
        with temporary:
            tee = _Tee(stream, temporary)
            try:
                with ArtifactReader(tee, keys) as reader:
                    check_name(reader.header.name)
                    reader.validate()
                    header, signature = reader.header, reader.signature
            except ArtifactError as error:
                raise ApiError(400, f"invalid artifact: {error}") from None
            tee.drain()
            temporary.flush()
            os.fsync(temporary.fileno())
        _refuse_duplicate(header)
        artifact = Artifact(name=header.name, device_types=header.device_types,
                            header=header.to_dict(), signature=signature, size=tee.size,
                            sha256=tee.sha256.hexdigest(), description=description)
        db.session.add(artifact)
        db.session.flush()
        store.put(artifact.id, Path(temporary.name))
        audit.record("artifact.upload", artifact.id, name=artifact.name, size=artifact.size)
        db.session.commit()
        return artifact
    finally:
        Path(temporary.name).unlink(missing_ok=True)


def _refuse_duplicate(header: ArtifactHeader) -> None:
    """One artifact per name and device type, as Mender: a deployment names an artifact."""
    for other in db.session.query(Artifact).filter_by(name=header.name):
        common = set(other.device_types) & set(header.device_types)
        if common:
            raise ApiError(409, f"artifact {header.name} already exists for device type(s) "
                                f"{', '.join(sorted(common))}")


def get(artifact_id: str) -> Artifact:
    artifact = db.session.get(Artifact, artifact_id)
    if artifact is None:
        raise ApiError(404, f"no artifact {artifact_id}")
    return artifact


def list_artifacts(name: str | None = None) -> list[Artifact]:
    query = db.session.query(Artifact).order_by(Artifact.created_at, Artifact.id)
    if name is not None:
        query = query.filter(Artifact.name == name)
    return query.all()


def delete(artifact_id: str) -> None:
    artifact = get(artifact_id)
    in_use = db.session.query(DeviceDeployment).filter(
        DeviceDeployment.artifact_id == artifact.id,
        DeviceDeployment.finished_at.is_(None)).first()
    if in_use is not None:
        raise ApiError(409, "artifact is being deployed; abort the deployment first")
    db.session.delete(artifact)
    audit.record("artifact.delete", artifact.id, name=artifact.name)
    db.session.commit()
    storage().delete(artifact.id)


def artifact_view(artifact: Artifact) -> dict:
    return {
        "id": artifact.id,
        "name": artifact.name,
        "device_types_compatible": artifact.device_types,
        "description": artifact.description,
        "signature": artifact.signature,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "created_at": artifact.created_at.isoformat(),
        "info": artifact.header,
    }


def header_of(artifact: Artifact) -> ArtifactHeader:
    """The stored header back as the artifact library's object, for compatibility checks."""
    info = artifact.header
    payloads = [PayloadHeader(index=p["index"], type=p["type"], provides=p["artifact_provides"],
                              depends=p["artifact_depends"],
                              clears_provides=p["clears_artifact_provides"])
                for p in info["payloads"]]
    return ArtifactHeader(name=info["name"], device_types=info["device_types"],
                          payloads=payloads, group=info["artifact_group"],
                          depends=info["artifact_depends"])


# -- signed download URLs ---------------------------------------------------------------------


def _signature(artifact_id: str, expires: int) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"download\n{artifact_id}\n{expires}".encode(), "sha256").hexdigest()


def device_download_url(artifact: Artifact) -> tuple[str, int]:
    """Where a device fetches the artifact, and until when (Unix time): the storage's own URL
    (S3: presigned), else the server's link signed for DOWNLOAD_URL_SECONDS."""
    seconds = current_app.config["DOWNLOAD_URL_SECONDS"]
    expires = int(time.time()) + seconds
    direct = storage().download_url(artifact.id, seconds)
    if direct is not None:
        return direct, expires
    return url_for("artifact_download.device_download", artifact_id=artifact.id, expire=expires,
                   signature=_signature(artifact.id, expires), _external=True), expires


# Built once: every device download checks its link, then only needs the id and name.
_DOWNLOADABLE = select(Artifact.id, Artifact.name).where(Artifact.id == bindparam("artifact_id"))


def check_download(artifact_id: str, expires: str | None, signature: str | None):
    """The artifact's id and name (a named tuple), if the link is good: one autocommit
    lookup, no ORM object (its header can be large) and no session."""
    if not expires or not signature or not expires.isdigit():
        raise ApiError(403, "missing or malformed download signature")
    if not hmac.compare_digest(_signature(artifact_id, int(expires)), signature):
        raise ApiError(403, "invalid download signature")
    if int(expires) < time.time():
        raise ApiError(403, "download link expired")
    found = db.read_one(_DOWNLOADABLE, artifact_id=artifact_id)
    if found is None:
        raise ApiError(404, f"no artifact {artifact_id}")
    return found
