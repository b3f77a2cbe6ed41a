"""Compressors of the artifact's header and data members, chosen by file suffix.

gzip uses python-isal (Intel ISA-L: faster, multi-threaded writing) where it is
installed and the standard library otherwise, so the device needs nothing
beyond the stdlib for gzip and xz. zstd is a Tern extension that
mender-artifact 3.9 cannot read.
"""
import gzip
import io
import lzma
import os
import zlib
from typing import BinaryIO

from .errors import StructureError, UnsupportedError

try:
    from isal import igzip, igzip_threaded, isal_zlib
except ImportError:  # the device: stdlib only
    igzip = igzip_threaded = isal_zlib = None
try:
    import zstandard
except ImportError:
    zstandard = None

SUFFIXES = {"none": "", "gzip": ".gz", "lzma": ".xz", "zstd": ".zst"}
NAMES = {suffix: name for name, suffix in SUFFIXES.items()}
GZIP_LEVEL = 6  # stdlib fallback; ISA-L's default level 2 is about as fast as zlib's 1
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
        if igzip is not None:  # its threaded reader measured slower here
            return igzip.IGzipFile(fileobj=raw, mode="rb")
        return gzip.GzipFile(fileobj=raw, mode="rb")
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
        if igzip_threaded is not None:
            return igzip_threaded.open(_Unclosing(raw), "wb", threads=threads)
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
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
