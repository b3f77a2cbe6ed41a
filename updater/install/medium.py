"""A slot's bytes as its medium holds them: read past the page cache, which may still hold
what was written after the device lost or damaged it."""

import os
from collections.abc import Iterator

READ_SIZE = 1 << 20


def medium_chunks(device: str, start: int, end: int) -> Iterator[bytes]:
    """The bytes [start, end) of `device`, in order, from the medium; fewer when the device
    ends first (the caller counts them)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
        position = start
        while position < end:
            chunk = os.pread(fd, min(READ_SIZE, end - position), position)
            if not chunk:
                return
            position += len(chunk)
            yield chunk
    finally:
        os.close(fd)
