"""Streaming writer of Mender Artifact format version 3.

Payload files are read twice and never held in memory: once to checksum them
for the manifest (which precedes the data), once to compress them into the
data member. A seekable output receives the data member directly and its tar
header is patched afterwards; a pipe gets it through a temporary spool file.
"""
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from . import manifest as manifest_format
from . import signing
from .block_index import copy_index, index_anchor, read_index
from .compression import SUFFIXES, compressing_writer
from .errors import ArtifactError, SignatureError, StructureError
from .header import SCRIPT_NAME, ArtifactHeader, dump_json
from .payloads import PayloadSource, check_payload_files
from .reader import UNSIGNED, ArtifactReader

CHUNK = 1 << 20
VERSION = b'{"format":"mender","version":3}'
_USTAR_MAX_SIZE = 8 << 30  # 11 octal digits; beyond, GNU base-256 in the same 512 bytes

Progress = Callable[[int], None]


def write_artifact(out: BinaryIO, header: ArtifactHeader, sources: list[PayloadSource], *,
                   compression: str = "gzip", signing_key: signing.PrivateKey | None = None,
                   progress: Progress | None = None) -> None:
    """Write an artifact with `header` and the files of `sources` (one per header payload)."""
    if compression not in SUFFIXES:
        raise StructureError(f"unknown compression {compression!r}; "
                             f"use one of {', '.join(SUFFIXES)}")
    header.payloads = [source.header for source in sources]
    _check_inputs(header, sources)
    progress = progress or (lambda _: None)
    entries: dict[str, str] = {}
    for source in sources:
        digests = [_sha256_file(path, progress) for path in source.paths]
        if source.checksum_provide:
            source.header.provides[source.checksum_provide] = digests[0]
        for path, digest in zip(source.paths, digests, strict=True):
            entries[f"data/{source.header.index:04d}/{path.name}"] = digest

    suffix = SUFFIXES[compression]
    _write_head(out, header, entries, compression, signing_key)
    for source in sources:
        expected = [entries[f"data/{source.header.index:04d}/{p.name}"] for p in source.paths]
        _write_streamed_member(
            out, f"data/{source.header.index:04d}.tar{suffix}",
            lambda raw, source=source, expected=expected: _write_data_tar(
                raw, compression, source.paths, expected, progress))
    out.write(b"\0" * 1024)
    out.flush()


def sign_artifact(source: Path, out: BinaryIO, key: signing.PrivateKey, *,
                  force: bool = False) -> None:
    """Copy the artifact at `source` to `out` with a new `manifest.sig`.

    The artifact is verified first (every checksum), so a signature never
    vouches for damaged content.
    """
    with open(source, "rb") as stream, ArtifactReader(stream) as artifact:
        if artifact.signature != UNSIGNED and not force:
            raise SignatureError("artifact already signed, refusing to re-sign; "
                                 "use the force option to override")
        artifact.validate()
        anchor = index_anchor(artifact.header)
    with open(source, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name == "manifest.sig":
                continue
            content = tar.extractfile(member)
            if member.name == "manifest":
                manifest = content.read()
                _write_member(out, "manifest", manifest)
                _write_member(out, "manifest.sig", signing.sign(manifest, key))
                continue
            out.write(_tar_header(member.name, member.size))
            shutil.copyfileobj(content, out, CHUNK)
            out.write(_padding(member.size))
    out.write(b"\0" * 1024)
    if anchor is not None:  # the block index after the tar's end (block_index)
        with open(source, "rb") as stream:
            read_index(stream, anchor)
            copy_index(stream, anchor, out)
    out.flush()


def _write_head(out: BinaryIO, header: ArtifactHeader, entries: dict[str, str],
                compression: str, signing_key) -> None:
    """version, manifest (the payload files' `entries`, the header's and the version's
    sha256 added), its signature when a key is given, and the header member."""
    header_member = _compress(compression, _header_tar(header))
    entries[f"header.tar{SUFFIXES[compression]}"] = hashlib.sha256(header_member).hexdigest()
    entries["version"] = hashlib.sha256(VERSION).hexdigest()
    manifest = manifest_format.serialize(entries)
    _write_member(out, "version", VERSION)
    _write_member(out, "manifest", manifest)
    if signing_key is not None:
        _write_member(out, "manifest.sig", signing.sign(manifest, signing_key))
    _write_member(out, f"header.tar{SUFFIXES[compression]}", header_member)


def _check_inputs(header: ArtifactHeader, sources: list[PayloadSource]) -> None:
    if not header.device_types:
        raise StructureError("at least one device type is required")
    for script in header.scripts:
        if not SCRIPT_NAME.fullmatch(script):
            raise StructureError(f"{script}: not a valid artifact state script name "
                                 "(Artifact<State>_<Enter|Leave|Error>_NN[_name])")
    for index, source in enumerate(sources):
        source.header.index = index
        names = [path.name for path in source.paths]
        if len(set(names)) != len(names):
            raise StructureError(f"payload {index}: two files share a name: {names}")
        for path in source.paths:
            if not path.is_file():
                raise StructureError(f"{path}: not a regular file")
        source.header.files = names
        check_payload_files(source.header)


def _header_tar(header: ArtifactHeader) -> bytes:
    buffer = io.BytesIO()
    _write_member(buffer, "header-info", dump_json(header.header_info()))
    for name, content in sorted(header.scripts.items()):
        _write_member(buffer, f"scripts/{name}", content, mode=0o755)
    for payload in header.payloads:
        prefix = f"headers/{payload.index:04d}/"
        _write_member(buffer, prefix + "type-info", dump_json(payload.type_info()))
        if payload.meta_data is not None:
            _write_member(buffer, prefix + "meta-data", dump_json(payload.meta_data))
        elif payload.type == "rootfs-image":  # what mender-artifact writes
            _write_member(buffer, prefix + "meta-data", b"")
    buffer.write(b"\0" * 1024)
    return buffer.getvalue()


def _compress(compression: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with compressing_writer(compression, buffer) as writer:
        writer.write(data)
    return buffer.getvalue()


def _write_data_tar(raw: BinaryIO, compression: str, paths: list[Path], expected: list[str],
                    progress: Progress) -> None:
    with compressing_writer(compression, raw) as writer:
        for path, digest in zip(paths, expected, strict=True):
            stat = path.stat()
            writer.write(_tar_header(path.name, stat.st_size, mode=stat.st_mode & 0o7777,
                                     mtime=int(stat.st_mtime)))
            digest_now = hashlib.sha256()
            with open(path, "rb") as source:
                while chunk := source.read(CHUNK):
                    digest_now.update(chunk)
                    writer.write(chunk)
                    progress(len(chunk))
            if digest_now.hexdigest() != digest:
                raise ArtifactError(f"{path}: changed while the artifact was being written")
            writer.write(_padding(stat.st_size))
        writer.write(b"\0" * 1024)


def _write_member(out: BinaryIO, name: str, data: bytes, mode: int = 0o644) -> None:
    out.write(_tar_header(name, len(data), mode=mode))
    out.write(data)
    out.write(_padding(len(data)))


def _write_streamed_member(out: BinaryIO, name: str, fill: Callable[[BinaryIO], None]) -> None:
    """Write a member whose size is known only once `fill` has written its content."""
    if out.seekable():
        start = out.tell()
        out.write(b"\0" * tarfile.BLOCKSIZE)
        fill(out)
        end = out.tell()
        size = end - start - tarfile.BLOCKSIZE
        out.write(_padding(size))
        out.seek(start)
        out.write(_tar_header(name, size))
        out.seek(0, os.SEEK_END)
        return
    with tempfile.TemporaryFile() as spool:
        fill(spool)
        size = spool.tell()
        spool.seek(0)
        out.write(_tar_header(name, size))
        shutil.copyfileobj(spool, out, CHUNK)
        out.write(_padding(size))


def _tar_header(name: str, size: int, mode: int = 0o644, mtime: int = 0) -> bytes:
    """One 512-byte header: ustar, or GNU base-256 sizes from 8 GiB (the header of a
    streamed member is patched in place, so it must not grow into PAX records)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uname = info.gname = "root"
    fmt = tarfile.USTAR_FORMAT if size < _USTAR_MAX_SIZE else tarfile.GNU_FORMAT
    try:
        return info.tobuf(format=fmt, encoding="utf-8", errors="strict")
    except ValueError as error:
        raise StructureError(f"{name}: cannot be stored in the artifact: {error}") from None


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _sha256_file(path: Path, progress: Progress) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()
