"""The one artifact factory of the tests and benchmarks: a signed or unsigned artifact written
with the library, a rootfs-image or an update module's."""
import io
import tempfile
from pathlib import Path

from artifact.header import ArtifactHeader
from artifact.payloads import PayloadOptions, Software, module_image, rootfs_image
from artifact.writer import write_artifact


def build_artifact(files: dict[str, bytes], *, name: str, device_types=("qemu-arm64",),
                   module_type: str | None = None, signing_key=None, compression="gzip",
                   provides=None, depends=None, meta_data=None, artifact_depends=None,
                   scripts=None, group=None) -> bytes:
    """The bytes of an artifact named `name` whose payload holds `files` ({name: content}):
    one file makes a rootfs-image unless `module_type` is given. `provides`, `depends` and
    `meta_data` are the payload's; `artifact_depends`, `scripts` and `group` the header's."""
    options = PayloadOptions(provides=dict(provides or {}), depends=dict(depends or {}),
                             meta_data=meta_data)
    header = ArtifactHeader(name=name, device_types=list(device_types), payloads=[],
                            group=group, depends=dict(artifact_depends or {}),
                            scripts=dict(scripts or {}))
    out = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="tern-artifact-") as directory:
        paths = []
        for file_name, content in files.items():
            path = Path(directory) / file_name
            path.write_bytes(content)
            paths.append(path)
        if module_type:
            source = module_image(module_type, paths, Software(name=module_type, version=name),
                                  options)
        else:
            (path,) = paths
            source = rootfs_image(path, Software(version=name), options)
        write_artifact(out, header, [source], compression=compression, signing_key=signing_key)
    return out.getvalue()


def single_file_artifact(directory: Path, name: str, device_types=("qemux86-64",), *,
                         depends: dict | None = None, payload_depends: dict | None = None,
                         signing_key=None, stem: str | None = None) -> Path:
    """A single-file module artifact, as `mender-artifact write module-image -T single-file`,
    written to DIRECTORY/STEM.mender (STEM: the name by default): what a server test uploads."""
    stem = stem or name
    output = directory / f"{stem}.mender"
    output.write_bytes(build_artifact(
        {f"{stem}.txt": f"payload of {name}\n".encode()}, name=name,
        device_types=device_types, module_type="single-file", signing_key=signing_key,
        depends=payload_depends, artifact_depends=depends))
    return output


def write_indexed_artifact_file(path: Path, image: bytes, *, name: str,
                                device_types=("qemu-arm64",), signing_key=None,
                                chunk_size: int = 64 << 10) -> Path:
    """A rootfs-image artifact of `image` with a block index (artifact.block_writer), at
    `path`."""
    from artifact.block_writer import write_indexed_artifact

    with tempfile.TemporaryDirectory(prefix="tern-artifact-") as directory:
        image_path = Path(directory) / "rootfs.ext4"
        image_path.write_bytes(image)
        source = rootfs_image(image_path, Software(version=name), PayloadOptions())
        header = ArtifactHeader(name=name, device_types=list(device_types), payloads=[])
        with open(path, "wb") as out:
            write_indexed_artifact(out, header, source, signing_key=signing_key,
                                   chunk_size=chunk_size)
    return path
