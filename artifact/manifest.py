"""The `manifest` member: one `<sha256 lowercase hex>  <name>` line per checksummed member.

Signing covers exactly these bytes, so parsing is strict: lowercase hex, two
spaces, LF endings, no duplicates, safe names.
"""
import re

from .errors import StructureError

_LINE = re.compile(rb"([0-9a-f]{64})  ([^\s/][^\s]*)")
_NAME = re.compile(r"version|header\.tar(\.[a-z]+)?|data/\d{4}/[^/\x00]+")


def parse(data: bytes) -> dict[str, str]:
    """Map member name -> expected sha256 hex, in manifest order."""
    if not data.endswith(b"\n"):
        raise StructureError("manifest: missing final newline")
    entries: dict[str, str] = {}
    for number, line in enumerate(data[:-1].split(b"\n"), start=1):
        match = _LINE.fullmatch(line)
        if not match:
            raise StructureError(
                f"manifest: line {number}: malformed checksum line: {line[:120]!r}")
        try:
            name = match.group(2).decode()
        except UnicodeDecodeError:
            raise StructureError(f"manifest: line {number}: member name is not UTF-8") from None
        if not _NAME.fullmatch(name) or name.rsplit("/", 1)[-1] in (".", ".."):
            raise StructureError(f"manifest: line {number}: unexpected member name {name!r}")
        if name in entries:
            raise StructureError(f"manifest: line {number}: duplicate entry for {name}")
        entries[name] = match.group(1).decode()
    return entries


def serialize(entries: dict[str, str]) -> bytes:
    return b"".join(f"{digest}  {name}\n".encode() for name, digest in entries.items())
