"""Files replaced atomically: the state store, the status queue, provides, the device key;
and new files written durably (an artifact's state scripts).

Write a temp file, fsync it, rename it over the file, fsync the directory: after power
loss the file holds either its previous content or the new one.
"""
import os
from pathlib import Path

from . import failpoints


def write_atomically(path: Path, data: bytes, failpoint: str | None = None) -> None:
    """`failpoint`: a counted fail point hit between the fsync and the rename (tests)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    if failpoint:
        failpoints.hit_nth(failpoint)
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def write_files_durably(directory: Path, files: dict[str, bytes], mode: int = 0o644) -> None:
    """Create `directory` (and its parents) with `files` in it, each fsynced, then the
    directory and its parent: after power loss none is missing or comes back empty."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with memoryview(content) as view:
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
            os.fchmod(fd, mode)  # whatever the umask
            os.fsync(fd)
        finally:
            os.close(fd)
    for path in (directory, directory.parent):
        _fsync_directory(path)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
