"""Streams a rootfs-image payload into the inactive slot.

Writes are large and block-aligned (the last one may be short), the slot is fsynced,
and — when `verify_readback` — read back from the device, past the page cache, and
hashed against the manifest before anything marks the slot bootable.
"""
import hashlib
import os
import stat

from .. import failpoints, markers

WRITE_SIZE = 4 << 20
READ_SIZE = 4 << 20


class InstallError(Exception):
    """The payload cannot be written to, or read back from, the slot."""


def write_image(file, target: str, expected_sha256: str, readback: bool = True) -> int:
    """Write `file` (a PayloadFile: iterating it verifies its checksum) to `target`."""
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError as error:
        raise InstallError(f"cannot open slot {target}: {error.strerror}") from None
    try:
        block_device = stat.S_ISBLK(os.fstat(fd).st_mode)
        if block_device:
            capacity = os.lseek(fd, 0, os.SEEK_END)
            os.lseek(fd, 0, os.SEEK_SET)
            if file.size > capacity:
                raise InstallError(f"payload {file.name} is {file.size} bytes, slot {target} "
                                   f"holds {capacity}")
        written = _stream(fd, file, markers.WriteProgress(file.size))
        if not block_device:
            os.ftruncate(fd, written)
        os.fsync(fd)
    finally:
        os.close(fd)
    if readback:
        actual = _hash_from_device(target, written)
        if actual != expected_sha256:
            raise InstallError(f"slot {target} reads back sha256 {actual}, "
                               f"expected {expected_sha256}")
    return written


def _stream(fd: int, chunks, progress: markers.WriteProgress) -> int:
    crash_at = failpoints.payload_offset()
    pending = bytearray()
    written = 0
    for chunk in chunks:
        pending += chunk
        if len(pending) >= WRITE_SIZE:
            size = len(pending) - len(pending) % WRITE_SIZE
            with memoryview(pending) as view:
                written += _write_all(fd, view[:size], written, crash_at)
            del pending[:size]
            progress.update(written)
    with memoryview(pending) as view:
        written += _write_all(fd, view, written, crash_at)
    progress.update(written)
    return written


def _write_all(fd: int, data: memoryview, offset: int, crash_at: int | None) -> int:
    if crash_at is not None and offset <= crash_at <= offset + len(data):
        os.write(fd, data[: crash_at - offset])
        failpoints.crash(f"payload:{crash_at}")
    total = 0
    while total < len(data):
        total += os.write(fd, data[total:])
    return total


def _hash_from_device(target: str, size: int) -> str:
    digest = hashlib.sha256()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)  # read the medium, not the cache
        remaining = size
        while remaining:
            chunk = os.read(fd, min(READ_SIZE, remaining))
            if not chunk:
                raise InstallError(f"slot {target} ends after {size - remaining} bytes")
            digest.update(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()
