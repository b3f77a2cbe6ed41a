"""Payload types: what each writes into its type-info by default, and what a reader checks.

`rootfs-image` carries exactly one file, the filesystem image for the inactive
slot. Any other type is an update module's (`single-file`, `directory`, custom),
with any number of files and an optional meta-data document.
"""
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StructureError
from ..header import PayloadHeader

ROOTFS_IMAGE = "rootfs-image"
CHECKSUM_PROVIDE = "rootfs-image.checksum"
LEGACY_CHECKSUM_PROVIDE = "rootfs_image_checksum"
ROOTFS_DEFAULT_CLEARS = ["artifact_group", LEGACY_CHECKSUM_PROVIDE]


@dataclass
class PayloadSource:
    """What the writer needs for one payload: its header and the files to pack."""

    header: PayloadHeader
    paths: list[Path]
    checksum_provide: str | None = None  # a provide set to the single file's sha256


@dataclass
class Software:
    """mender-artifact's --software-{filesystem,name,version}: one `<fs>[.<name>].version`
    provide, cleared by `<fs>[.<name>].*` on the next install."""

    filesystem: str = "rootfs-image"
    name: str = ""
    version: str | None = None  # None: no default version provide

    @property
    def prefix(self) -> str:
        return f"{self.filesystem}.{self.name}" if self.name else self.filesystem


@dataclass
class PayloadOptions:
    provides: dict[str, str] = field(default_factory=dict)
    depends: dict[str, str] = field(default_factory=dict)
    clears_provides: list[str] = field(default_factory=list)
    default_clears: bool = True
    meta_data: dict | None = None


def rootfs_image(path: Path, software: Software, options: PayloadOptions, *,
                 checksum_provide: str | None = CHECKSUM_PROVIDE) -> PayloadSource:
    clears = list(options.clears_provides)
    if options.default_clears:
        clears += ROOTFS_DEFAULT_CLEARS + [f"{software.prefix}.*"]
    header = PayloadHeader(index=0, type=ROOTFS_IMAGE, depends=dict(options.depends),
                           provides=_provides(software, options), clears_provides=clears)
    return PayloadSource(header, [path], checksum_provide)


def module_image(payload_type: str, paths: list[Path], software: Software,
                 options: PayloadOptions) -> PayloadSource:
    if payload_type == ROOTFS_IMAGE:
        raise StructureError("module-image: use 'write rootfs-image' for the rootfs-image type")
    clears = list(options.clears_provides)
    if options.default_clears:
        clears.append(f"{software.prefix}.*")
    header = PayloadHeader(index=0, type=payload_type, depends=dict(options.depends),
                           provides=_provides(software, options), clears_provides=clears,
                           meta_data=options.meta_data)
    return PayloadSource(header, list(paths))


def check_payload_files(payload: PayloadHeader) -> None:
    if payload.type == ROOTFS_IMAGE and len(payload.files) != 1:
        raise StructureError(f"data/{payload.index:04d}: a rootfs-image payload must contain "
                             f"exactly one file, found {len(payload.files)}")


def _provides(software: Software, options: PayloadOptions) -> dict[str, str]:
    provides = dict(options.provides)
    if software.version is not None:
        provides[f"{software.prefix}.version"] = software.version
    return provides
