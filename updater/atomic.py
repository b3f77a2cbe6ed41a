"""Files replaced atomically: the state store, the status queue, provides, the device key.

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
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
