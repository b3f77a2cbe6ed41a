"""Files replaced atomically: the state store, the status queue, provides, the device key;
and new files written durably (an artifact's state scripts).

Write a temp file, fsync it, rename it over the file, fsync the directory: after power
loss the file holds either its previous content or the new one.
"""
import os
from pathlib import Path

from . import failpoints


def write_atomically(path: Path, data: bytes, failpoint: str | None = None,
                     mode: int | None = None) -> None:
    """`failpoint`: a counted fail point hit between the fsync and the rename (tests).
    `mode`: the file's permissions, set before a byte is written (a secret is never
    readable by others, not even for a moment); by default as the umask makes them."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb", opener=None if mode is None else _opener(mode)) as file:
        if mode is not None:
            os.fchmod(file.fileno(), mode)  # an older .tmp keeps its mode through O_CREAT
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


def _opener(mode: int):
    return lambda name, flags: os.open(name, flags, mode)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
