"""The block index of a rootfs image, and where its blocks sit in the artifact (a Tern extension).

A rootfs-image artifact written with a block index stays an ordinary Mender artifact:

- its data member `data/0000.tar.gz` (or `.zst`, or uncompressed) is a chain of independent
  compressed members, which every gzip/zstd reader decompresses as one stream: the inner
  tar's header, then one member per *chunk* (`chunk_blocks` blocks of the image), then the
  inner tar's padding and end. Each chunk can thus be fetched by HTTP Range and decompressed
  on its own: the full payload is also the range-addressable chunk area;
- the index (a hash per block, then the offset of each chunk inside the data member) is
  appended after the outer tar's end-of-archive, where tar readers (Mender's included) stop;
- the rootfs payload's `meta-data` (inside the header, which the signed manifest covers)
  holds the index's size and sha256 (`ANCHOR`), so the index is covered by the signature,
  and through its block hashes every chunk too.

A device reads the artifact's head (`ArtifactReader`, with its verify keys), takes the anchor
and `ArtifactReader.payload_offset`, fetches the last `size` bytes (`Range: bytes=-size`),
and checks them with `BlockIndex.parse(data, anchor)`.

The index is stored zlib-compressed (runs of equal blocks, zeros above all, shrink to
nothing). Uncompressed, little-endian: `MAGIC`, block size (u32), blocks per chunk (u32),
image size (u64); then one hash per block (`block_digest`: 16 bytes of sha256; the last
block's over its bytes only, when the image ends inside it); then chunk_count + 1 offsets
(u64), relative to the start of the data member's content: chunk i spans
[offsets[i], offsets[i+1]).
"""
import hashlib
import io
import mmap
import os
import struct
import sys
import tarfile
import tempfile
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .compression import (  # None on the device: stdlib only
    ZSTD_LEVEL,
    _gzip_member,
    _zstandard,
    zstandard,
)
from .errors import ChecksumError, StructureError, UnsupportedError
from .header import ArtifactHeader, PayloadHeader

MAGIC = b"TERNBIX\x01"
_DECOMPRESSION_ERRORS = (zlib.error, ValueError, *((zstandard.ZstdError,) if zstandard else ()))
ANCHOR = "tern.block_index"  # the key in the rootfs payload's meta-data
_HEAD = struct.Struct("<8sIIQ")
HASH_SIZE = 16  # sha256, truncated: see block_digest
INDEX_LEVEL = 6  # zlib, for the index: runs of equal blocks (zeros) shrink to nothing
DEFAULT_BLOCK_SIZE = 4096
DEFAULT_CHUNK_SIZE = 64 << 10
MAX_BLOCK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 16 << 20
CHUNK_COMPRESSIONS = ("none", "gzip", "zstd")


@dataclass(frozen=True)
class IndexAnchor:
    """What the signed header says of the index: how long it is and its sha256."""

    size: int
    sha256: str

    def to_meta_data(self) -> dict:
        return {ANCHOR: {"format": 1, "size": self.size, "sha256": self.sha256}}

    @classmethod
    def from_payload(cls, payload: PayloadHeader) -> "IndexAnchor | None":
        """The anchor of a rootfs payload, or None when the artifact has no block index."""
        entry = (payload.meta_data or {}).get(ANCHOR)
        if entry is None:
            return None
        where = f"headers/{payload.index:04d}/meta-data: {ANCHOR}"
        if not isinstance(entry, dict) or entry.get("format") != 1:
            raise UnsupportedError(f"{where}: unknown format {entry!r:.80}")
        size, digest = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or size <= 0 or not isinstance(digest, str) \
                or len(digest) != 64:
            raise StructureError(f"{where}: expected an integer size and a sha256")
        return cls(size, digest)


@dataclass
class BlockIndex:
    """A parsed index. `hashes` holds the block hashes back to back (HASH_SIZE bytes each)."""

    block_size: int
    chunk_blocks: int
    image_size: int
    hashes: bytes | memoryview
    offsets: array  # 'Q', chunk_count + 1 entries

    @property
    def block_count(self) -> int:
        return -(-self.image_size // self.block_size)

    @property
    def chunk_count(self) -> int:
        return len(self.offsets) - 1

    @property
    def chunk_size(self) -> int:
        return self.block_size * self.chunk_blocks

    @property
    def compressed_bytes(self) -> int:
        return self.offsets[-1] - self.offsets[0]

    def block_hash(self, block: int) -> bytes:
        return bytes(self.hashes[block * HASH_SIZE:(block + 1) * HASH_SIZE])

    def block_length(self, block: int) -> int:
        return min(self.block_size, self.image_size - block * self.block_size)

    def chunk_blocks_of(self, chunk: int) -> range:
        first = chunk * self.chunk_blocks
        return range(first, min(first + self.chunk_blocks, self.block_count))

    def chunk_span(self, chunk: int) -> tuple[int, int]:
        """[start, end) of a chunk's compressed bytes, relative to the data member's content."""
        return self.offsets[chunk], self.offsets[chunk + 1]

    def serialize(self) -> bytes:
        """The index uncompressed (`encode` gives what the artifact stores)."""
        return (_HEAD.pack(MAGIC, self.block_size, self.chunk_blocks, self.image_size)
                + bytes(self.hashes) + offsets_bytes(self.offsets))

    def encode(self) -> bytes:
        return zlib.compress(self.serialize(), INDEX_LEVEL)

    @classmethod
    def parse(cls, encoded: bytes, anchor: IndexAnchor | None = None) -> "BlockIndex":
        """Parse an index as the artifact stores it (zlib); with `anchor`, only after its size
        and sha256 match it."""
        if anchor is not None:
            if len(encoded) != anchor.size:
                raise StructureError(f"block index: {len(encoded)} bytes, the signed header "
                                     f"says {anchor.size}")
            actual = hashlib.sha256(encoded).hexdigest()
            if actual != anchor.sha256:
                raise ChecksumError("block index", anchor.sha256, actual)
        out = io.BytesIO()
        _inflate([encoded], out)
        return cls.from_raw(out.getbuffer())

    @classmethod
    def from_raw(cls, data) -> "BlockIndex":
        """Parse an uncompressed index (any bytes-like object; the hashes are not copied)."""
        if len(data) < _HEAD.size:
            raise StructureError("block index: truncated")
        magic, block_size, chunk_blocks, image_size = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise StructureError(f"block index: bad magic {bytes(magic)!r}")
        if not 512 <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise StructureError(f"block index: block size {block_size} is not a power of two "
                                 f"from 512 to {MAX_BLOCK_SIZE}")
        if not 1 <= chunk_blocks <= MAX_CHUNK_SIZE // block_size:
            raise StructureError(f"block index: {chunk_blocks} blocks per chunk")
        expected = _raw_size(block_size, chunk_blocks, image_size)
        if len(data) != expected:
            raise StructureError(f"block index: {len(data)} bytes, expected {expected} for "
                                 f"{image_size} bytes in blocks of {block_size}")
        block_count = -(-image_size // block_size)
        hashes_end = _HEAD.size + block_count * HASH_SIZE
        offsets = array("Q")
        offsets.frombytes(data[hashes_end:])
        if sys.byteorder == "big":
            offsets.byteswap()
        if any(a >= b for a, b in zip(offsets, offsets[1:], strict=False)):
            raise StructureError("block index: chunk offsets do not increase")
        hashes = memoryview(data)[_HEAD.size:hashes_end]  # no copy: 0.4 % of the image
        return cls(block_size, chunk_blocks, image_size, hashes, offsets)

    def describe(self, anchor: IndexAnchor) -> dict:
        return {"block_size": self.block_size, "block_count": self.block_count,
                "chunk_size": self.chunk_size, "chunk_count": self.chunk_count,
                "image_size": self.image_size, "chunk_bytes": self.compressed_bytes,
                "index_bytes": anchor.size, "sha256": anchor.sha256}


def index_anchor(header: ArtifactHeader) -> IndexAnchor | None:
    """The anchor of an artifact's block index, or None when it has none."""
    for payload in header.payloads:
        if payload.type == "rootfs-image":
            return IndexAnchor.from_payload(payload)
    return None


def read_index(stream: BinaryIO, anchor: IndexAnchor) -> BlockIndex:
    """The index at the end of a seekable artifact file, checked against its anchor. It is
    inflated into a temporary file that stays mapped, so memory stays flat in image size."""
    end = stream.seek(0, os.SEEK_END)
    start = end - anchor.size
    if start < 0:
        raise StructureError(f"block index: the artifact has {end} bytes, fewer than its "
                             f"index's {anchor.size}")
    stream.seek(start)
    digest = hashlib.sha256()
    while data := stream.read(min(1 << 20, end - stream.tell())):
        digest.update(data)
    if digest.hexdigest() != anchor.sha256:
        raise ChecksumError("block index", anchor.sha256, digest.hexdigest())
    stream.seek(start)
    with tempfile.TemporaryFile() as raw:
        _inflate(iter(lambda: stream.read(min(1 << 20, end - stream.tell())), b""), raw)
        if not raw.tell():
            raise StructureError("block index: empty")
        raw.flush()
        mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
    return BlockIndex.from_raw(memoryview(mapped))


def copy_index(stream: BinaryIO, anchor: IndexAnchor, out: BinaryIO) -> None:
    """Copy the index as stored at the end of `stream` (checked by read_index first)."""
    stream.seek(-anchor.size, os.SEEK_END)
    remaining = anchor.size
    while remaining and (data := stream.read(min(1 << 20, remaining))):
        out.write(data)
        remaining -= len(data)


def verified_blocks(index: BlockIndex, chunk: int, compressed: bytes,
                    compression: str) -> Iterator[tuple[int, bytes]]:
    """(block, bytes) of a fetched chunk, each checked against its hash before it is given."""
    blocks = index.chunk_blocks_of(chunk)
    size = sum(index.block_length(block) for block in blocks)
    data = decompress_chunk(compression, compressed, size)
    for position, block in enumerate(blocks):
        content = data[position * index.block_size:
                       position * index.block_size + index.block_length(block)]
        actual = block_digest(content)
        if actual != index.block_hash(block):
            raise ChecksumError(f"block {block}", index.block_hash(block).hex(), actual.hex())
        yield block, content


def verify_chunks(stream: BinaryIO, index: BlockIndex, payload_offset: int,
                  compression: str) -> None:
    """Read every chunk of a seekable artifact at the offset the index gives, and check its
    blocks: what a device that fetched them all would check."""
    base = data_content_offset(payload_offset)
    for chunk in range(index.chunk_count):
        start, end = index.chunk_span(chunk)
        stream.seek(base + start)
        for _ in verified_blocks(index, chunk, stream.read(end - start), compression):
            pass


def block_digest(data) -> bytes:
    """A block's hash: its sha256's first 16 bytes. A forged block would need a second
    preimage (2^128 work), and the whole image's full sha256 is checked before it boots."""
    return hashlib.sha256(data).digest()[:HASH_SIZE]


def _raw_size(block_size: int, chunk_blocks: int, image_size: int) -> int:
    block_count = -(-image_size // block_size)
    chunk_count = -(-block_count // chunk_blocks)
    return _HEAD.size + block_count * HASH_SIZE + (chunk_count + 1) * 8


def _inflate(pieces, out: BinaryIO) -> None:
    """Decompress the zlib stream in `pieces` into `out`, no more than its head announces."""
    inflater = zlib.decompressobj()
    head, limit, written = b"", None, 0
    try:
        for piece in pieces:
            while piece:
                data = inflater.decompress(piece, 1 << 20)
                piece = inflater.unconsumed_tail
                if limit is None:
                    head = (head + data)[:_HEAD.size]
                    if len(head) == _HEAD.size:
                        limit = _announced_size(head)
                written += len(data)
                if limit is not None and written > limit:
                    raise StructureError("block index: longer than its head announces")
                out.write(data)
        if not inflater.eof or inflater.unused_data:
            raise StructureError("block index: truncated or followed by other bytes")
    except zlib.error as error:
        raise StructureError(f"block index: cannot decompress: {error}") from None


def _announced_size(head: bytes) -> int:
    _, block_size, chunk_blocks, image_size = _HEAD.unpack(head)
    if block_size < 512 or chunk_blocks < 1:
        raise StructureError(f"block index: block size {block_size}, {chunk_blocks} blocks "
                             f"per chunk")
    return _raw_size(block_size, chunk_blocks, image_size)


def offsets_bytes(offsets: array) -> bytes:
    """Offsets as the index stores them (u64, little-endian)."""
    if sys.byteorder == "big":
        offsets = array("Q", offsets)
        offsets.byteswap()
    return offsets.tobytes()


def data_content_offset(payload_offset: int) -> int:
    """Where the data member's content starts: after its one 512-byte tar header (what Tern's
    writer and `sign` write)."""
    return payload_offset + tarfile.BLOCKSIZE


def compress_chunk(compression: str, data: bytes) -> bytes:
    """One independent member of the data stream (gzip as the artifact's other members, or a
    zstd frame)."""
    if compression == "none":
        return data
    if compression == "gzip":
        return _gzip_member(data)
    if compression == "zstd":
        return _zstandard().ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    raise UnsupportedError(f"a block index needs {', '.join(CHUNK_COMPRESSIONS)} compression, "
                           f"not {compression}")


def decompress_chunk(compression: str, data: bytes, size: int) -> bytes:
    """A fetched chunk's `size` bytes; StructureError when it is not exactly that."""
    try:
        if compression == "none":
            out = data
        elif compression == "gzip":
            decompressor = zlib.decompressobj(31)
            out = decompressor.decompress(data, size + 1)
            if not decompressor.eof or decompressor.unused_data:
                raise StructureError("chunk: not exactly one gzip member")
        elif compression == "zstd":
            out = _zstandard().ZstdDecompressor().decompress(data, max_output_size=size + 1)
        else:
            raise UnsupportedError(f"chunks compressed with {compression} are not supported")
    except _DECOMPRESSION_ERRORS as error:
        raise StructureError(f"chunk: cannot decompress: {error}") from None
    if len(out) != size:
        raise StructureError(f"chunk: {len(out)} bytes, expected {size}")
    return out

