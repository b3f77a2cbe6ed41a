import io
from pathlib import Path

import pytest

from testkit.artifacts import build_artifact


@pytest.fixture
def artifact_bytes():
    """Write an artifact with the library (testkit.artifacts.build_artifact) and return its
    bytes. files: {name: content}; one file makes a rootfs-image unless module_type is given."""
    def make(files=None, *, name="release-1", device_types=("qemu-arm64",), key=None,
             compression="gzip", module_type=None, meta_data=None, scripts=None,
             provides=None, depends=None, artifact_depends=None, group=None) -> bytes:
        return build_artifact(
            {"rootfs.ext4": b"\x53\xef" * 4096} if files is None else files, name=name,
            device_types=device_types, module_type=module_type, compression=compression,
            signing_key=key.private_key if key else None, provides=provides, depends=depends,
            meta_data=meta_data, artifact_depends=artifact_depends, scripts=scripts,
            group=group)

    return make


class OneWayStream(io.RawIOBase):
    """A non-seekable stream, like an HTTP response: read() only, in small pieces."""

    def __init__(self, data: bytes, piece: int = 7919):
        self._data = memoryview(data)
        self._position = 0
        self._piece = piece

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._piece, len(self._data) - self._position)
        buffer[:n] = self._data[self._position:self._position + n]
        self._position += n
        return n


@pytest.fixture
def one_way():
    return OneWayStream


def read_all(data: bytes, keys=(), stream_class=None):
    """Read an artifact fully; return (reader, {(payload, file): content})."""
    from artifact.reader import ArtifactReader

    stream = stream_class(data) if stream_class else io.BytesIO(data)
    contents = {}
    with ArtifactReader(stream, list(keys)) as reader:
        for payload in reader.payloads():
            for file in payload.files():
                contents[(payload.index, file.name)] = b"".join(file)
    return reader, contents


@pytest.fixture
def read_artifact():
    return read_all


def verify_key(pair):
    from artifact.signing import load_key_file

    return load_key_file(Path(pair.public_path))


@pytest.fixture
def verify_keys(keys):
    return {kind: verify_key(pair) for kind, pair in keys.items()}


class Members:
    """Take an artifact apart into (name, bytes) members and put it back together."""

    @staticmethod
    def split(data: bytes) -> list[tuple[str, bytes]]:
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]

    @staticmethod
    def join(members: list[tuple[str, bytes]], member_type=None) -> bytes:
        import tarfile

        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, content in members:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return out.getvalue()

    @staticmethod
    def tar(entries: list[tuple[str, bytes]], compression="gzip", types=None) -> bytes:
        """A (compressed) inner tar; `types` maps names to a tarfile type such as SYMTYPE."""
        import gzip
        import tarfile

        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, content in entries:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                if types and name in types:
                    info.type = types[name]
                    info.size = 0
                    info.linkname = "/etc/passwd"
                    content = b""
                tar.addfile(info, io.BytesIO(content))
        return gzip.compress(raw.getvalue()) if compression == "gzip" else raw.getvalue()


@pytest.fixture
def members():
    return Members
