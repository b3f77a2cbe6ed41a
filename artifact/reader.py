"""Streaming reader of Mender Artifact format version 3.

The artifact is read once, front to back, from any object with `read` (a file,
a pipe, an HTTP response). Nothing of a payload is handed out before the
manifest's signature (when keys are given) and the header's checksum have been
verified, and a payload file's last chunk is followed by its checksum check:
a consumer that sees the iteration over a file end normally has all of its
bytes, verified.

    with ArtifactReader(stream, verify_keys=keys) as artifact:
        print(artifact.header.name)
        for payload in artifact.payloads():
            for file in payload.files():
                for chunk in file:
                    sink.write(chunk)
"""
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import BinaryIO

from . import manifest as manifest_format
from . import signing
from .compression import (
    DECOMPRESSION_ERRORS,
    SUFFIXES,
    GzipMembersReader,
    compression_of,
    decompress_bounded,
    decompressing_reader,
)
from .errors import ChecksumError, SignatureError, StructureError, UnsupportedError
from .header import ArtifactHeader, PayloadHeader, parse_header_tar
from .payloads import check_payload_files

CHUNK = 1 << 20
FORMAT_VERSION = 3
MAX_VERSION = 4 << 10
MAX_MANIFEST = 4 << 20
MAX_SIGNATURE = 8 << 10
MAX_HEADER = 16 << 20  # compressed, and again decompressed

UNSIGNED, VERIFIED, UNVERIFIED = "unsigned", "verified", "unverified"

# Checks the manifest's signature (the manifest's bytes, manifest.sig's base64) and returns
# the name of the key that verified it; raises SignatureError.
Verifier = Callable[[bytes, bytes], str]


class ArtifactReader:
    """Reads the version, manifest, signature and header on construction; payloads on demand."""

    def __init__(self, stream: BinaryIO, verify_keys: list[signing.VerifyKey] = (), *,
                 chunk_size: int = CHUNK, verifier: Verifier | None = None):
        """`verify_keys`: a signature must verify with one of them; or `verifier` checks it
        its own way (the device's agent: with its keys, in a forked child, so that
        cryptography's OpenSSL backend never loads into its process)."""
        keys = list(verify_keys)
        if verifier is None and keys:
            verifier = lambda manifest, signature: signing.verify(  # noqa: E731
                manifest, signature, keys).name
        self.chunk_size = chunk_size
        self.signature = UNSIGNED
        self.verified_by: str | None = None
        self._payload: PayloadReader | None = None  # the one being read
        try:
            self._tar = tarfile.open(fileobj=ForwardReader(stream), mode="r:")
        except tarfile.TarError as error:
            raise StructureError(f"not a tar archive: {error}") from None
        try:
            self._read_head(verifier)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "ArtifactReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._payload is not None:
            self._payload.close()
        self._tar.close()

    # -- version, manifest, signature, header ------------------------------------------------

    def _read_head(self, verifier: Verifier | None) -> None:
        version = self._read_small("version", MAX_VERSION)
        self._check_version(version)
        manifest_bytes = self._read_small("manifest", MAX_MANIFEST)
        self.manifest = manifest_format.parse(manifest_bytes)
        member = self._next_member()
        if member is not None and member.name == "manifest.sig":
            signature = self._read_content(member, MAX_SIGNATURE)
            if verifier is not None:
                self.verified_by = verifier(manifest_bytes, signature)
                self.signature = VERIFIED
            else:
                self.signature = UNVERIFIED
            member = self._next_member()
        elif verifier is not None:
            raise SignatureError("missing signature: the artifact is not signed, "
                                 "but verification keys were given")
        if member is not None and member.name == "manifest-augment":
            raise UnsupportedError("manifest-augment: augmented artifacts are not supported")
        self._check_digest("version", version)
        if member is None or not member.name.startswith("header.tar"):
            raise StructureError(f"expected header.tar[.gz|.xz|.zst] after the manifest, found "
                                 f"{member.name if member else 'the end of the artifact'}")
        self.compression = compression_of(member.name, "header.tar")
        header_bytes = self._read_content(member, MAX_HEADER)
        self._check_digest(member.name, header_bytes)
        decompressed = decompress_bounded(self.compression, header_bytes, MAX_HEADER, member.name)
        self.header: ArtifactHeader = parse_header_tar(decompressed, member.name)
        self._assign_files()
        # Where the first data member's tar header starts: the head ends here (block_index).
        self.payload_offset: int = self._tar.offset

    def _check_version(self, data: bytes) -> None:
        try:
            document = json.loads(data)
        except ValueError:
            raise StructureError(f"version: invalid JSON: {data[:80]!r}") from None
        if not isinstance(document, dict) or document.get("format") != "mender":
            raise StructureError(f"version: expected format 'mender', got {data[:80]!r}")
        if document.get("version") != FORMAT_VERSION:
            raise UnsupportedError(f"version: artifact format version {document.get('version')!r}"
                                   f" is not supported; expected {FORMAT_VERSION}")

    def _assign_files(self) -> None:
        """Give each payload its files from the manifest and check nothing else is listed."""
        by_index = {f"data/{p.index:04d}/": p for p in self.header.payloads}
        for name in self.manifest:
            if name == "version" or name.startswith("header.tar"):
                continue
            payload = by_index.get(name[:10])
            if payload is None:
                raise StructureError(f"manifest: {name} names no payload of the header")
            payload.files.append(name[10:])
        header_entries = [n for n in self.manifest if n.startswith("header.tar")]
        if header_entries != [f"header.tar{SUFFIXES[self.compression]}"]:
            raise StructureError(f"manifest: expected one entry for the header member, found "
                                 f"{header_entries}")
        for payload in self.header.payloads:
            check_payload_files(payload)

    def _check_digest(self, name: str, data: bytes) -> None:
        expected = self.manifest.get(name)
        if expected is None:
            raise StructureError(f"manifest: no checksum for {name}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ChecksumError(name, expected, actual)

    # -- payloads ---------------------------------------------------------------------------

    def payloads(self) -> Iterator["PayloadReader"]:
        """Yield each payload in order; when the iteration ends, the whole artifact is verified."""
        for payload in self.header.payloads:
            member = self._next_member()
            expected = f"data/{payload.index:04d}.tar"
            if member is None or not member.name.startswith(expected):
                raise StructureError(f"expected {expected}[.gz|.xz|.zst], found "
                                     f"{member.name if member else 'the end of the artifact'}")
            self._payload = PayloadReader(self, payload, member)
            yield self._payload
            self._payload.drain()
            self._payload.close()
            self._payload = None
        extra = self._next_member()
        if extra is not None:
            raise StructureError(f"unexpected member {extra.name} after the last payload")

    def data_member(self) -> tarfile.TarInfo:
        """Instead of `payloads`: the first payload's data member (name, size, offsets)
        without reading any of its content, for a reader that fetches it by ranges
        (block_index)."""
        member = self._next_member()
        if member is None or not member.name.startswith("data/0000.tar"):
            raise StructureError(f"expected data/0000.tar[.gz|.xz|.zst], found "
                                 f"{member.name if member else 'the end of the artifact'}")
        return member

    def validate(self) -> None:
        """Read and verify everything that is left."""
        for payload in self.payloads():
            payload.drain()

    # -- outer tar --------------------------------------------------------------------------

    def _next_member(self) -> tarfile.TarInfo | None:
        try:
            member = self._tar.next()
        except tarfile.TarError as error:
            raise StructureError(f"corrupt or truncated artifact: {error}") from None
        if member is not None and member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise StructureError(f"{member.name}: not a regular file")
        return member

    def _read_small(self, name: str, limit: int) -> bytes:
        member = self._next_member()
        if member is None or member.name != name:
            raise StructureError(f"expected {name}, found "
                                 f"{member.name if member else 'the end of the artifact'}")
        return self._read_content(member, limit)

    def _read_content(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if member.size > limit:
            raise StructureError(f"{member.name}: {member.size} bytes, more than {limit}")
        try:
            data = self._tar.extractfile(member).read()
        except tarfile.TarError as error:
            raise StructureError(f"{member.name}: truncated: {error}") from None
        if len(data) != member.size:
            raise StructureError(f"{member.name}: truncated: {len(data)} of {member.size} bytes")
        return data

    def _open_member(self, member: tarfile.TarInfo) -> BinaryIO:
        return self._tar.extractfile(member)


class PayloadReader:
    """One `data/NNNN.tar*` member; yields its files in archive order."""

    def __init__(self, artifact: ArtifactReader, header: PayloadHeader, member: tarfile.TarInfo):
        self.header = header
        self.index = header.index
        self.type = header.type
        self.member = member.name
        self.offset = member.offset_data  # of its first byte in the artifact
        self.header_offset = member.offset  # of its tar header: the head ends here
        self._artifact = artifact
        self._remaining = set(header.files)
        self._current: PayloadFile | None = None
        self._done = False
        compression = compression_of(member.name, f"data/{header.index:04d}.tar")
        self.compression = compression
        self._decompressed = decompressing_reader(compression, artifact._open_member(member))
        self._stream = ForwardReader(self._decompressed)
        try:
            self._tar = tarfile.open(fileobj=self._stream, mode="r:")
        except (tarfile.TarError, *DECOMPRESSION_ERRORS) as error:
            self.close()
            raise StructureError(f"{self.member}: not a valid data archive: {error}") from None

    def files(self) -> Iterator["PayloadFile"]:
        while True:
            if self._current is not None:
                self._current.drain()
                self._current = None
            with _data_errors(self.member):
                info = self._tar.next()
            if info is None:
                break
            name = info.name
            if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise StructureError(f"{self.member}/{name}: not a regular file")
            if name not in self._remaining:
                reason = "listed twice" if name in self.header.files else "not in the manifest"
                raise StructureError(f"{self.member}/{name}: unexpected payload file ({reason})")
            self._remaining.discard(name)
            manifest_name = f"data/{self.index:04d}/{name}"
            # The file's bytes follow its header: read them straight from the stream.
            self._current = PayloadFile(self, name, info.size, self._stream,
                                        self._artifact.manifest[manifest_name])
            yield self._current
        if self._remaining:
            raise StructureError(f"{self.member}: can not find data file(s) "
                                 f"{', '.join(sorted(self._remaining))}")
        self._done = True

    def restart_point(self, offset: int) -> tuple[int, int] | None:
        """(artifact offset, data offset): the last point at or before `offset` of the
        decompressed data archive where reading can start afresh from that byte of the
        artifact (a gzip member's start; any byte when uncompressed); None: only the start.
        A download cut by power loss resumes there."""
        if self.compression == "none":
            return self.offset + offset, offset
        if isinstance(self._decompressed, GzipMembersReader):
            compressed, decompressed = self._decompressed.restart_point(offset)
            return self.offset + compressed, decompressed
        return None

    def drain(self) -> None:
        if not self._done:
            for file in self.files():
                file.drain()

    def close(self) -> None:
        self._decompressed.close()


class PayloadFile:
    """A payload file's bytes as chunks; the iteration raises ChecksumError instead of ending
    when the bytes differ from the manifest."""

    def __init__(self, payload: PayloadReader, name: str, size: int, source: BinaryIO,
                 expected_sha256: str):
        self.name = name
        self.size = size
        self.offset = source.tell()  # of its first byte in the decompressed data archive
        self._payload = payload
        self._source = source
        self._expected = expected_sha256
        self._hash = hashlib.sha256()
        self._read = 0
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        chunk_size = self._payload._artifact.chunk_size
        # Hashing runs beside decompression and the consumer, one chunk behind.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
            hashing = None
            while self._read < self.size:
                with _data_errors(self._payload.member):
                    chunk = self._source.read(min(chunk_size, self.size - self._read))
                if not chunk:
                    break
                if hashing is not None:
                    hashing.result()
                hashing = hasher.submit(self._hash.update, chunk)
                self._read += len(chunk)
                yield chunk
            if hashing is not None:
                hashing.result()
        self._finish()

    def drain(self) -> None:
        if not self._finished:
            for _ in self:
                pass

    def _finish(self) -> None:
        where = f"{self._payload.member}/{self.name}"
        if self._read != self.size:
            raise StructureError(f"{where}: truncated: {self._read} of {self.size} bytes")
        actual = self._hash.hexdigest()
        if actual != self._expected:
            raise ChecksumError(f"data/{self._payload.index:04d}/{self.name}", self._expected,
                                actual)
        self._finished = True


class ForwardReader(io.RawIOBase):
    """A read-once stream with the tell() and forward-only seek() that tarfile's
    random-access mode needs. tarfile's own stream mode ("r|") copies each byte about four
    times through its buffer, and its member readers twice more; the payload files are read
    from this stream directly. Together: a quarter of the time on incompressible payloads."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Exactly `size` bytes unless the stream ends (sockets and pipes return less)."""
        data = self._raw.read(size)
        if 0 < len(data) < size:
            parts = [data]
            missing = size - len(data)
            while missing and (more := self._raw.read(missing)):
                parts.append(more)
                missing -= len(more)
            data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._position:
            raise io.UnsupportedOperation("an artifact is read once, front to back")
        while self._position < offset and self.read(min(offset - self._position, CHUNK)):
            pass
        return self._position


@contextmanager
def _data_errors(member: str):
    """Turn tar and decompression failures inside a data member into StructureError."""
    try:
        yield
    except (tarfile.TarError, *DECOMPRESSION_ERRORS) as error:
        raise StructureError(f"{member}: corrupt or truncated: {error}") from None
