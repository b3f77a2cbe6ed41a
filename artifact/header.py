"""The artifact's header: `header-info`, state scripts, and per payload `type-info` and
`meta-data`, as JSON documents in `header.tar[.gz|.xz|.zst]`.
"""
import io
import json
import re
import tarfile
from dataclasses import dataclass, field

from .errors import StructureError

# State scripts an artifact may carry (Idle, Sync and Download scripts live on the rootfs).
SCRIPT_NAME = re.compile(
    r"(ArtifactInstall|ArtifactReboot|ArtifactCommit|ArtifactRollback|ArtifactRollbackReboot"
    r"|ArtifactFailure)_(Enter|Leave|Error)_\d\d(_[A-Za-z0-9_.-]+)?"
)
MAX_JSON = 1 << 20
MAX_SCRIPT = 8 << 20


@dataclass
class PayloadHeader:
    index: int
    type: str
    provides: dict[str, str] = field(default_factory=dict)
    depends: dict[str, str | list[str]] = field(default_factory=dict)
    # None: the artifact predates clears_artifact_provides, and an install replaces all provides
    clears_provides: list[str] | None = None
    meta_data: dict | None = None
    files: list[str] = field(default_factory=list)  # from the manifest, in its order

    def type_info(self) -> dict:
        info: dict = {"type": self.type}
        if self.depends:
            info["artifact_depends"] = dict(sorted(self.depends.items()))
        if self.provides:
            info["artifact_provides"] = dict(sorted(self.provides.items()))
        if self.clears_provides:
            info["clears_artifact_provides"] = list(self.clears_provides)
        return info


@dataclass
class ArtifactHeader:
    name: str
    device_types: list[str]
    payloads: list[PayloadHeader]
    group: str | None = None
    depends: dict[str, list[str]] = field(default_factory=dict)  # besides device_type
    scripts: dict[str, bytes] = field(default_factory=dict)

    @property
    def provides(self) -> dict[str, str]:
        """Artifact-level provides, then every payload's, as a device would record them."""
        provides = {"artifact_name": self.name}
        if self.group is not None:
            provides["artifact_group"] = self.group
        for payload in self.payloads:
            provides.update(payload.provides)
        return provides

    def header_info(self) -> dict:
        provides = {"artifact_name": self.name}
        if self.group is not None:
            provides["artifact_group"] = self.group
        depends: dict = {}
        if "artifact_name" in self.depends:
            depends["artifact_name"] = self.depends["artifact_name"]
        depends["device_type"] = list(self.device_types)
        depends.update((k, v) for k, v in self.depends.items() if k != "artifact_name")
        return {
            "payloads": [{"type": payload.type} for payload in self.payloads],
            "artifact_provides": provides,
            "artifact_depends": depends,
        }

    def to_dict(self) -> dict:
        """A JSON-ready view, for `read --json` and the server."""
        return {
            "name": self.name,
            "device_types": self.device_types,
            "artifact_group": self.group,
            "artifact_depends": self.depends,
            "provides": self.provides,
            "state_scripts": sorted(self.scripts),
            "payloads": [
                {
                    "index": p.index,
                    "type": p.type,
                    "files": p.files,
                    "artifact_provides": p.provides,
                    "artifact_depends": p.depends,
                    "clears_artifact_provides": p.clears_provides,
                    "meta_data": p.meta_data,
                }
                for p in self.payloads
            ],
        }


def dump_json(document) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def parse_header_tar(data: bytes, member: str) -> ArtifactHeader:
    """Parse the decompressed header tar, in mender's strict member order."""
    entries = list(_tar_entries(data, member))
    position = 0

    def take(expected_name: str) -> bytes | None:
        nonlocal position
        if position < len(entries) and entries[position][0] == expected_name:
            position += 1
            return entries[position - 1][1]
        return None

    header_info = take("header-info")
    if header_info is None:
        raise StructureError(f"{member}: first member must be header-info, found "
                             f"{entries[0][0] if entries else 'nothing'}")
    header = _parse_header_info(_load_json(header_info, f"{member}/header-info"), member)
    while position < len(entries) and entries[position][0].startswith("scripts/"):
        name, content = entries[position]
        script = name.removeprefix("scripts/")
        if not SCRIPT_NAME.fullmatch(script):
            raise StructureError(f"{member}/{name}: not a valid artifact state script name")
        if len(content) > MAX_SCRIPT:
            raise StructureError(f"{member}/{name}: larger than {MAX_SCRIPT} bytes")
        header.scripts[script] = content
        position += 1
    for payload in header.payloads:
        prefix = f"headers/{payload.index:04d}/"
        type_info = take(prefix + "type-info")
        if type_info is None:
            found = entries[position][0] if position < len(entries) else "the end"
            raise StructureError(f"{member}: expected {prefix}type-info, found {found}")
        _apply_type_info(payload, _load_json(type_info, f"{member}/{prefix}type-info"), member)
        meta_data = take(prefix + "meta-data")
        if meta_data:  # rootfs-image artifacts carry an empty one
            document = _load_json(meta_data, f"{member}/{prefix}meta-data")
            if not isinstance(document, dict):
                raise StructureError(f"{member}/{prefix}meta-data: must be a JSON object")
            payload.meta_data = document
    if position != len(entries):
        raise StructureError(f"{member}: unexpected member {entries[position][0]}")
    return header


def _tar_entries(data: bytes, member: str):
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isfile() or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise StructureError(f"{member}/{info.name}: not a regular file")
                yield info.name, tar.extractfile(info).read()
    except tarfile.TarError as error:
        raise StructureError(f"{member}: not a valid tar archive: {error}") from None


def _load_json(data: bytes, member: str):
    if len(data) > MAX_JSON:
        raise StructureError(f"{member}: larger than {MAX_JSON} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise StructureError(f"{member}: invalid JSON: {error}") from None


def _parse_header_info(info, member: str) -> ArtifactHeader:
    where = f"{member}/header-info"
    _expect(isinstance(info, dict), where, "must be a JSON object")
    payloads = info.get("payloads")
    _expect(isinstance(payloads, list) and payloads, where, "'payloads' must be a non-empty list")
    provides = info.get("artifact_provides")
    depends = info.get("artifact_depends")
    _expect(isinstance(provides, dict), where, "'artifact_provides' must be an object")
    _expect(isinstance(depends, dict), where, "'artifact_depends' must be an object")
    name = provides.get("artifact_name")
    _expect(_is_text(name), where, "'artifact_provides.artifact_name' must be a non-empty string")
    group = provides.get("artifact_group")
    _expect(group is None or isinstance(group, str), where,
            "'artifact_provides.artifact_group' must be a string")
    device_types = depends.get("device_type")
    _expect(_is_text_list(device_types), where,
            "'artifact_depends.device_type' must be a non-empty list of strings")
    other_depends = {k: v for k, v in depends.items() if k != "device_type"}
    for key, value in other_depends.items():
        _expect(_is_text_list(value), where, f"'artifact_depends.{key}' must be a list of strings")
    types = []
    for index, payload in enumerate(payloads):
        _expect(isinstance(payload, dict) and _is_text(payload.get("type")), where,
                f"payload {index} must have a non-empty 'type'")
        types.append(PayloadHeader(index=index, type=payload["type"]))
    return ArtifactHeader(name=name, device_types=device_types, payloads=types, group=group,
                          depends=other_depends)


def _apply_type_info(payload: PayloadHeader, info, member: str) -> None:
    where = f"{member}/headers/{payload.index:04d}/type-info"
    _expect(isinstance(info, dict), where, "must be a JSON object")
    declared = info.get("type", "")
    # mender-artifact 3.9 writes "" for rootfs-image; otherwise it repeats header-info's type.
    _expect(declared in ("", payload.type), where,
            f"type {declared!r} differs from header-info's {payload.type!r}")
    provides = info.get("artifact_provides") or {}
    _expect(isinstance(provides, dict) and all(isinstance(v, str) for v in provides.values()),
            where, "'artifact_provides' must map names to strings")
    depends = info.get("artifact_depends") or {}
    _expect(isinstance(depends, dict)
            and all(isinstance(v, str) or _is_text_list(v) for v in depends.values()),
            where, "'artifact_depends' must map names to strings or lists of strings")
    clears = info.get("clears_artifact_provides")
    _expect(clears is None or isinstance(clears, list) and all(isinstance(v, str) for v in clears),
            where,
            "'clears_artifact_provides' must be a list of strings")
    payload.provides, payload.depends, payload.clears_provides = provides, depends, clears


def _expect(condition: bool, member: str, message: str) -> None:
    if not condition:
        raise StructureError(f"{member}: {message}")


def _is_text(value) -> bool:
    return isinstance(value, str) and value != ""


def _is_text_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_text(v) for v in value)
