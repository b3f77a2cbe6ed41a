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
    from isal import igzip, igzip_lib, isal_zlib
except ImportError:  # the device: stdlib only
    igzip = igzip_lib = isal_zlib = None
try:
    import zstandard
except ImportError:
    zstandard = None

SUFFIXES = {"none": "", "gzip": ".gz", "lzma": ".xz", "zstd": ".zst"}
NAMES = {suffix: name for name, suffix in SUFFIXES.items()}
GZIP_LEVEL = 6  # stdlib fallback
ISAL_LEVEL = 2  # ISA-L's default for streams, about as fast as zlib's 1
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
        return MembersWriter(raw, threads)
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
    """A gzip stream of one or more members, each checked (CRC, length) by ISA-L's
    decompressor where installed and zlib's otherwise. `starts` holds the (compressed,
    decompressed) offset of every member's first byte: a point where reading can begin
    afresh. Memory stays bounded: READ_SIZE of input, `size` of output a read."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._decompressor = _member_decompressor()
        self._input = b""  # read from raw, for the next member
        self._member_start = 0  # compressed offset of the current member
        self._fed = 0  # bytes given to the current member's decompressor
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
            decompressor = self._decompressor
            if decompressor.eof:
                if not self._next_member():
                    return b""
                continue
            data = b""
            if decompressor.needs_input:
                data, self._input = self._input or self._raw.read(READ_SIZE), b""
                if not data:
                    raise EOFError("compressed file ended before the end-of-stream marker "
                                   "was reached")
                self._fed += len(data)
            out = decompressor.decompress(data, size)
            if out:
                self._produced += len(out)
                return out
        return b""

    def _next_member(self) -> bool:
        """After a member's end: start the next one, past gzip's zero padding, if any."""
        unused = self._decompressor.unused_data
        end = self._member_start + self._fed - len(unused)
        pending = unused + self._input
        while not (rest := pending.lstrip(b"\0")):
            end += len(pending)
            pending = self._raw.read(READ_SIZE)
            if not pending:
                return False
        end += len(pending) - len(rest)
        self._decompressor = _member_decompressor()
        self._input, self._member_start, self._fed = rest, end, 0
        self.starts.append((end, self._produced))
        return True

    def restart_point(self, offset: int) -> tuple[int, int]:
        """The last member start at or before decompressed `offset`."""
        return self.starts[bisect.bisect_right(self.starts, offset, key=lambda s: s[1]) - 1]


def _member_decompressor():
    """One gzip member's decompressor: `decompress(data, max_length)` keeps the input it
    has not used yet; `needs_input`, `eof`, `unused_data`."""
    if igzip_lib is not None:
        return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    return _ZlibMember()


class _ZlibMember:
    """zlib's decompressobj with IgzipDecompressor's interface (Python 3.11 has no
    zlib._ZlibDecompressor)."""

    def __init__(self):
        self._decompressor = zlib.decompressobj(wbits=31)
        self._tail = b""

    @property
    def needs_input(self) -> bool:
        return not self._tail and not self._decompressor.eof

    @property
    def eof(self) -> bool:
        return self._decompressor.eof

    @property
    def unused_data(self) -> bytes:
        return self._decompressor.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._decompressor.decompress(self._tail + data if self._tail else data,
                                            max_length)
        self._tail = self._decompressor.unconsumed_tail
        return out


def _gzip_member(data: bytes) -> bytes:
    if igzip is not None:
        return igzip.compress(data, ISAL_LEVEL, mtime=0)
    return gzip.compress(data, GZIP_LEVEL, mtime=0)


class MembersWriter(io.RawIOBase):
    """Writes its input as independent compressed members, one per `member_size` bytes
    (`end_member` ends one early), compressed by `threads` at once (zlib, ISA-L and zstd
    release the GIL), a bounded number in flight. `on_member(offset)` hears where each
    member ends in `raw` (counted from the writer's first byte), in order.

    The artifact's gzip data are 1 MiB members (a cut download resumes at one); a block
    index's chunk area is the same with members of a chunk (block_writer)."""

    def __init__(self, raw: BinaryIO, threads: int, *, member_size: int | None = None,
                 compress=None, on_member=None):
        self._raw = raw
        self._buffer = bytearray()
        self._threads = threads
        self._member_size = member_size or GZIP_MEMBER_SIZE
        self._compress = compress or _gzip_member
        self._on_member = on_member or (lambda offset: None)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="members")
        self._pending: collections.deque = collections.deque()
        self._members = 0
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer += data
        if len(self._buffer) >= self._member_size:
            with memoryview(self._buffer) as view:
                whole = len(view) - len(view) % self._member_size
                for start in range(0, whole, self._member_size):
                    self._submit(bytes(view[start:start + self._member_size]))
            del self._buffer[:whole]
        return len(data)

    def end_member(self) -> None:
        """End the member being filled here, however short (nothing if it is empty)."""
        if self._buffer:
            self._submit(bytes(self._buffer))
            self._buffer.clear()

    def _submit(self, data: bytes) -> None:
        self._pending.append(self._pool.submit(self._compress, data))
        self._members += 1
        while len(self._pending) > 2 * self._threads:
            self._write_next()

    def _write_next(self) -> None:
        member = self._pending.popleft().result()
        self._raw.write(member)
        self._written += len(member)
        self._on_member(self._written)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buffer or not self._members:  # an empty input is one empty member
                self._submit(bytes(self._buffer))
            while self._pending:
                self._write_next()
        finally:
            self._pool.shutdown(cancel_futures=True)
            super().close()
