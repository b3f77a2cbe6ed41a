"""Small signed rootfs-image artifacts for simulated fleets (tests, benchmarks)."""
import tempfile
from pathlib import Path

from artifact.header import ArtifactHeader
from artifact.payloads import PayloadOptions, Software, rootfs_image
from artifact.writer import write_artifact


def write_rootfs_artifact(path: Path, name: str, device_type: str, signing_key,
                          size: int = 64 << 10, compression: str = "gzip") -> Path:
    """`size` bytes of payload (its release's name, repeated) for `device_type`."""
    with tempfile.TemporaryDirectory() as directory:
        image = Path(directory) / "rootfs.ext4"
        line = f"{name}\n".encode()
        image.write_bytes((line * (size // len(line) + 1))[:size])
        header = ArtifactHeader(name=name, device_types=[device_type], payloads=[])
        with open(path, "wb") as out:
            write_artifact(out, header, [rootfs_image(image, Software(version=name),
                                                      PayloadOptions())],
                           compression=compression, signing_key=signing_key)
    return path
