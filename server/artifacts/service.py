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
import time
from pathlib import Path
from typing import BinaryIO

from flask import current_app, url_for
from sqlalchemy import bindparam, select
from werkzeug.exceptions import HTTPException

from artifact import (
    ArtifactError,
    ArtifactHeader,
    ArtifactReader,
    PayloadHeader,
    SignatureError,
)

from .. import audit
from ..database import db
from ..errors import ApiError
from ..models import Artifact, DeviceDeployment
from ..storage import staged_upload, storage
from .keys import TrustedKey, trusted_keys

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
    """Store a valid artifact; with verify keys configured, only one signed by one of them."""
    keys = trusted_keys()
    store = storage()
    with staged_upload(store) as temporary:
        tee = _Tee(stream, temporary)
        try:
            header, signature, verified_by = _validate(tee, keys)
        except ApiError:
            _discard_rest(stream)
            raise
        tee.drain()
        temporary.flush()
        os.fsync(temporary.fileno())
        _refuse_duplicate(header)
        artifact = Artifact(name=header.name, device_types=header.device_types,
                            header=header.to_dict(), signature=signature,
                            signature_key_name=verified_by.name if verified_by else None,
                            signature_key_fingerprint=(verified_by.fingerprint if verified_by
                                                       else None),
                            size=tee.size,
                            sha256=tee.sha256.hexdigest(), description=description)
        db.session.add(artifact)
        db.session.flush()
        store.put(artifact.id, Path(temporary.name))
        audit.record("artifact.upload", artifact.id, name=artifact.name, size=artifact.size)
        db.session.commit()
        return artifact


def _validate(tee: _Tee, keys: list[TrustedKey]) -> tuple[ArtifactHeader, str,
                                                          TrustedKey | None]:
    """The artifact's header, signature state and the key that verified it."""
    try:
        with ArtifactReader(tee, [k.verify_key for k in keys]) as reader:
            check_name(reader.header.name)
            reader.validate()
            verified_by = next((k for k in keys if k.name == reader.verified_by), None)
            return reader.header, reader.signature, verified_by
    except SignatureError as error:
        raise ApiError(400, f"artifact refused: this server accepts only artifacts signed "
                            f"with one of its verify keys: {error}") from None
    except ArtifactError as error:
        raise ApiError(400, f"invalid artifact: {error}") from None


def _discard_rest(stream: BinaryIO) -> None:
    """Read what the client is still sending, so that it gets the refusal (found as soon as
    the artifact's head is read) rather than a connection closed under its upload."""
    try:
        while stream.read(CHUNK):
            pass
    except (HTTPException, OSError):  # over the size limit, or the client went away
        pass


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
        "verified_by": {"name": artifact.signature_key_name,
                        "fingerprint": artifact.signature_key_fingerprint}
        if artifact.signature_key_fingerprint is not None else None,
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
    if not (expires and signature and expires.isascii() and expires.isdigit()
            and len(expires) <= 20 and signature.isascii()):
        raise ApiError(403, "missing or malformed download signature")
    if not hmac.compare_digest(_signature(artifact_id, int(expires)), signature):
        raise ApiError(403, "invalid download signature")
    if int(expires) < time.time():
        raise ApiError(403, "download link expired")
    found = db.read_one(_DOWNLOADABLE, artifact_id=artifact_id)
    if found is None:
        raise ApiError(404, f"no artifact {artifact_id}")
    return found
