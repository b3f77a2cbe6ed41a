"""Compressors of the artifact's header and data members, chosen by file suffix.

gzip uses python-isal (Intel ISA-L: faster) where it is installed and the standard
library otherwise, so the device needs nothing beyond the stdlib for gzip and xz. zstd
is a Tern extension that mender-artifact 3.9 cannot read.

gzip is written as a series of members, one per `GZIP_MEMBER_SIZE` of input (still one
valid gzip stream: gzip, Go's reader and Python's read members one after another). Each
member starts afresh, so a download cut in the middle can resume at the last member
start (`GzipMembersReader.starts`) instead of at the first byte; the members are also
compressed in parallel.
"""
import bisect
import collections
import gzip
import io
import lzma
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from .errors import StructureError, UnsupportedError

try:
    from isal import igzip, isal_zlib
except ImportError:  # the device: stdlib only
    igzip = isal_zlib = None
try:
    import zstandard
except ImportError:
    zstandard = None

SUFFIXES = {"none": "", "gzip": ".gz", "lzma": ".xz", "zstd": ".zst"}
NAMES = {suffix: name for name, suffix in SUFFIXES.items()}
GZIP_LEVEL = 6  # stdlib fallback; ISA-L's default level 2 is about as fast as zlib's 1
GZIP_MEMBER_SIZE = 1 << 20  # input bytes per member: the ratio costs < 0.1 % (32 KiB window)
READ_SIZE = 1 << 20
LZMA_PRESET = 6  # what mender-artifact uses
ZSTD_LEVEL = 3

# What a corrupt compressed stream raises, whichever implementation reads it.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, zlib.error, lzma.LZMAError,
    *((isal_zlib.error,) if isal_zlib else ()),
    *((zstandard.ZstdError,) if zstandard else ()),
)


def compression_of(member: str, stem: str) -> str:
    """The compression of member `stem + suffix`: ("header.tar.gz", "header.tar") -> gzip."""
    suffix = member[len(stem):]
    if not member.startswith(stem) or suffix not in NAMES:
        raise UnsupportedError(f"{member}: unknown compression suffix {suffix!r}")
    return NAMES[suffix]


def decompressing_reader(name: str, raw: BinaryIO) -> BinaryIO:
    """A reader of the decompressed bytes of `raw`; reads `raw` sequentially, once."""
    if name == "none":
        return raw
    if name == "gzip":
        return GzipMembersReader(raw)
    if name == "lzma":
        return lzma.LZMAFile(raw, "rb")
    if name == "zstd":
        return _zstandard().ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    raise UnsupportedError(f"unknown compression {name!r}")


def compressing_writer(name: str, raw: BinaryIO) -> BinaryIO:
    """A writer whose bytes land compressed in `raw`; closing it leaves `raw` open."""
    threads = len(os.sched_getaffinity(0))
    if name == "none":
        return _Unclosing(raw)
    if name == "gzip":
        return GzipMembersWriter(raw, threads)
    if name == "lzma":
        return lzma.LZMAFile(_Unclosing(raw), "wb", preset=LZMA_PRESET)
    if name == "zstd":
        compressor = _zstandard().ZstdCompressor(level=ZSTD_LEVEL, threads=threads)
        return compressor.stream_writer(raw, closefd=False)
    raise UnsupportedError(f"unknown compression {name!r}")


def decompress_bounded(name: str, data: bytes, limit: int, member: str) -> bytes:
    """Decompress a small member whole, refusing to produce more than `limit` bytes."""
    try:
        with decompressing_reader(name, io.BytesIO(data)) as reader:
            out = reader.read(limit + 1)
    except DECOMPRESSION_ERRORS as error:
        raise StructureError(f"{member}: cannot decompress: {error}") from None
    if len(out) > limit:
        raise StructureError(f"{member}: decompresses to more than {limit} bytes")
    return out


def _zstandard():
    if zstandard is None:
        raise UnsupportedError("zstd compression needs the 'zstandard' package")
    return zstandard


class _Unclosing(io.RawIOBase):
    """Passes writes through to `raw` and leaves it open on close."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


class GzipMembersReader(io.RawIOBase):
    """A gzip stream of one or more members, read with zlib's decompressor (ISA-L's where
    installed), which checks each member's CRC and length. `starts` holds the
    (compressed, decompressed) offset of every member's first byte: a point where reading
    can begin afresh. Memory stays bounded: at most READ_SIZE of input is held."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._zlib = isal_zlib or zlib
        self._decompressor = self._zlib.decompressobj(wbits=31)
        self._input = b""  # read from raw, not yet consumed by a decompressor
        self._consumed = 0  # compressed bytes before self._input
        self._produced = 0
        self.starts: list[tuple[int, int]] = [(0, 0)]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(READ_SIZE), b""))
        while size:
            if not self._input:
                self._input = self._raw.read(READ_SIZE)
                if not self._input:
                    if self._decompressor.eof:
                        return b""
                    raise EOFError("compressed file ended before the end-of-stream marker "
                                   "was reached")
            if self._decompressor.eof:  # between members (gzip allows zero padding)
                stripped = self._input.lstrip(b"\0")
                self._consumed += len(self._input) - len(stripped)
                self._input = stripped
                if not stripped:
                    continue
                self._decompressor = self._zlib.decompressobj(wbits=31)
                self.starts.append((self._consumed, self._produced))
            given = self._input
            data = self._decompressor.decompress(given, size)
            self._input = (self._decompressor.unused_data if self._decompressor.eof
                           else self._decompressor.unconsumed_tail)
            self._consumed += len(given) - len(self._input)
            if data:
                self._produced += len(data)
                return data
        return b""

    def restart_point(self, offset: int) -> tuple[int, int]:
        """The last member start at or before decompressed `offset`."""
        return self.starts[bisect.bisect_right(self.starts, offset, key=lambda s: s[1]) - 1]


def _gzip_member(data: bytes) -> bytes:
    if igzip is not None:
        return igzip.compress(data, mtime=0)
    return gzip.compress(data, GZIP_LEVEL, mtime=0)


class GzipMembersWriter(io.RawIOBase):
    """Writes a gzip member per GZIP_MEMBER_SIZE of input, compressed by `threads` at once
    (zlib and ISA-L release the GIL); a bounded number of members is in flight."""

    def __init__(self, raw: BinaryIO, threads: int):
        self._raw = raw
        self._buffer = bytearray()
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="gzip")
        self._pending: collections.deque = collections.deque()
        self._members = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer += data
        while len(self._buffer) >= GZIP_MEMBER_SIZE:
            self._submit(bytes(self._buffer[:GZIP_MEMBER_SIZE]))
            del self._buffer[:GZIP_MEMBER_SIZE]
        return len(data)

    def _submit(self, data: bytes) -> None:
        self._pending.append(self._pool.submit(_gzip_member, data))
        self._members += 1
        while len(self._pending) > 2 * self._threads:
            self._raw.write(self._pending.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buffer or not self._members:  # an empty input is one empty member
                self._submit(bytes(self._buffer))
            while self._pending:
                self._raw.write(self._pending.popleft().result())
        finally:
            self._pool.shutdown(cancel_futures=True)
            super().close()
