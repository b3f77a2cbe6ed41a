"""The block index of a rootfs image, and where its blocks sit in the artifact (a Tern extension).

A rootfs-image artifact written with a block index stays an ordinary Mender artifact:

- its data member `data/0000.tar.gz` (or `.zst`, or uncompressed) is a chain of independent
  compressed members, which every gzip/zstd reader decompresses as one stream: the inner
  tar's header, then one member per *chunk* (`chunk_blocks` blocks of the image), then the
  inner tar's padding and end. Each chunk can thus be fetched by HTTP Range and decompressed
  on its own: the full payload is also the range-addressable chunk area;
- the index is appended after the outer tar's end-of-archive, where tar readers (Mender's
  included) stop. It has two levels (a Merkle tree of height two): the *leaves*, a hash per
  block (`block_digest`), and the *top*, a hash per chunk (`chunk_digest`, over the chunk's
  leaves), with the chunk offsets. The leaves come first, raw (hashes do not compress), those
  of one chunk one contiguous byte range; the top last, zlib-compressed;
- the rootfs payload's `meta-data` (inside the header, which the signed manifest covers)
  holds the top's size and sha256 and the leaves' size (`ANCHOR`, format 2). The top is
  covered by the signature, each chunk's leaves by its top entry, each block by its leaf.

A device reads the artifact's head (`ArtifactReader`, with its verify keys), takes the anchor
and `ArtifactReader.payload_offset`, fetches the top (`Range: bytes=-size`) and checks it
(`BlockIndex.parse(data, anchor)`). A chunk whose top entry its slots match in place needs no
leaves (`adopt`); the leaves of the others are fetched by Range and each chunk's checked
against its top entry (`accept_leaves`) before a block hash of it is used.

The top, uncompressed, little-endian: `MAGIC`, block size (u32), blocks per chunk (u32),
image size (u64); one byte per block, 1 when its leaf is stored, 0 for a whole block of zeros
(whose leaf, `zero_digest`, is implied); one `chunk_digest` per chunk; then chunk_count + 1
offsets (u64), relative to the start of the data member's content: chunk i spans
[offsets[i], offsets[i+1]). The leaves: the stored leaves (HASH_SIZE bytes each) in block
order; a chunk's are [leaf_starts[i], leaf_starts[i+1]) of them.

Format 1 (one zlib-compressed level, every leaf) is refused with an `UnsupportedError`, and a
format-1 reader refuses format 2 the same way: an agent of either streams the full payload.
"""
import functools
import hashlib
import io
import os
import struct
import sys
import tarfile
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

MAGIC = b"TERNBIX\x02"
FORMAT = 2  # the anchor's "format": 1 was a single level holding every leaf
_DECOMPRESSION_ERRORS = (zlib.error, ValueError, *((zstandard.ZstdError,) if zstandard else ()))
ANCHOR = "tern.block_index"  # the key in the rootfs payload's meta-data
_HEAD = struct.Struct("<8sIIQ")
HASH_SIZE = 16  # sha256, truncated: see block_digest
INDEX_LEVEL = 6  # zlib, for the top: zero blocks' flags and zero chunks' hashes shrink to nothing
DEFAULT_BLOCK_SIZE = 4096
DEFAULT_CHUNK_SIZE = 64 << 10
MAX_BLOCK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 16 << 20
CHUNK_COMPRESSIONS = ("none", "gzip", "zstd")


@dataclass(frozen=True)
class IndexAnchor:
    """What the signed header says of the index: the top's size and sha256 (it ends the
    artifact), and the size of the leaves just before it."""

    size: int
    sha256: str
    leaves: int

    @property
    def area(self) -> int:
        """The index's bytes at the artifact's end: leaves and top."""
        return self.leaves + self.size

    def to_meta_data(self) -> dict:
        return {ANCHOR: {"format": FORMAT, "size": self.size, "sha256": self.sha256,
                         "leaves": self.leaves}}

    @classmethod
    def from_payload(cls, payload: PayloadHeader) -> "IndexAnchor | None":
        """The anchor of a rootfs payload, or None when the artifact has no block index."""
        entry = (payload.meta_data or {}).get(ANCHOR)
        if entry is None:
            return None
        where = f"headers/{payload.index:04d}/meta-data: {ANCHOR}"
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            found = entry.get("format") if isinstance(entry, dict) else entry
            raise UnsupportedError(f"{where}: block index format {found!r:.40}, this reader "
                                   f"reads format {FORMAT} only")
        size, digest, leaves = entry.get("size"), entry.get("sha256"), entry.get("leaves")
        if not isinstance(size, int) or size <= 0 or not isinstance(digest, str) \
                or len(digest) != 64 or not isinstance(leaves, int) or leaves < 0 \
                or leaves % HASH_SIZE:
            raise StructureError(f"{where}: expected an integer size, a sha256 and the "
                                 f"leaves' size")
        return cls(size, digest, leaves)


@dataclass
class BlockIndex:
    """A parsed index. `hashes` holds the leaves back to back (HASH_SIZE bytes per block):
    a zero block's from the start, a chunk's others once `known` (verified against `tops`)."""

    block_size: int
    chunk_blocks: int
    image_size: int
    stored: bytes | memoryview  # 1 per block: 1 when its leaf is stored, 0 for zeros
    tops: bytes | memoryview  # HASH_SIZE per chunk: chunk_digest of its leaves
    offsets: array  # 'Q', chunk_count + 1 entries
    hashes: bytearray
    known: bytearray  # 1 per chunk whose leaves are in `hashes`
    leaf_starts: array  # 'Q', chunk_count + 1: the first stored leaf of each chunk

    @classmethod
    def of_leaves(cls, block_size: int, chunk_blocks: int, image_size: int, hashes: bytes,
                  offsets: array) -> "BlockIndex":
        """The index of an image whose every leaf is given (the writer's side)."""
        block_count = -(-image_size // block_size)
        zero = zero_digest(block_size)
        stored = bytearray(block_count)  # a short last block's leaf is not a zero block's
        for block in range(block_count):
            stored[block] = hashes[block * HASH_SIZE:(block + 1) * HASH_SIZE] != zero
        chunk_count = -(-block_count // chunk_blocks)
        tops = b"".join(chunk_digest(hashes[c * chunk_blocks * HASH_SIZE:
                                            (c + 1) * chunk_blocks * HASH_SIZE])
                        for c in range(chunk_count))
        return cls(block_size, chunk_blocks, image_size, bytes(stored), tops, offsets,
                   bytearray(hashes), bytearray(b"\1" * chunk_count),
                   _leaf_starts(stored, chunk_blocks, chunk_count))

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

    @property
    def leaf_bytes(self) -> int:
        """The size of the stored leaves."""
        return self.leaf_starts[-1] * HASH_SIZE

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

    def leaf_span(self, chunk: int) -> tuple[int, int]:
        """[start, end) of a chunk's stored leaves, relative to the start of the leaves."""
        return self.leaf_starts[chunk] * HASH_SIZE, self.leaf_starts[chunk + 1] * HASH_SIZE

    def top(self, chunk: int) -> bytes:
        return bytes(self.tops[chunk * HASH_SIZE:(chunk + 1) * HASH_SIZE])

    def adopt(self, chunk: int, leaves: bytes) -> bool:
        """Take a chunk's leaves (every block's) if their chunk_digest is its top entry."""
        if chunk_digest(leaves) != self.top(chunk):
            return False
        blocks = self.chunk_blocks_of(chunk)
        self.hashes[blocks.start * HASH_SIZE:blocks.stop * HASH_SIZE] = leaves
        self.known[chunk] = 1
        return True

    def expand(self, chunk: int, stored_leaves: bytes) -> bytes:
        """A chunk's leaves, every block's, from its stored ones (as fetched)."""
        start, end = self.leaf_span(chunk)
        if len(stored_leaves) != end - start:
            raise StructureError(f"block index: {len(stored_leaves)} bytes of leaves for chunk "
                                 f"{chunk}, expected {end - start}")
        zero, out, at = zero_digest(self.block_size), bytearray(), 0
        for block in self.chunk_blocks_of(chunk):
            if self.stored[block]:
                out += stored_leaves[at:at + HASH_SIZE]
                at += HASH_SIZE
            else:
                out += zero
        return bytes(out)

    def accept_leaves(self, chunk: int, stored_leaves: bytes) -> bytes:
        """Check a chunk's fetched leaves against its top entry and take them; return them,
        every block's. ChecksumError when they are not that chunk's."""
        leaves = self.expand(chunk, stored_leaves)
        if not self.adopt(chunk, leaves):
            raise ChecksumError(f"block index: the leaves of chunk {chunk}",
                                self.top(chunk).hex(), chunk_digest(leaves).hex())
        return leaves

    def stored_leaves(self, chunk: int) -> bytes:
        """A known chunk's leaves as the artifact stores them (zero blocks' left out)."""
        return b"".join(self.block_hash(block) for block in self.chunk_blocks_of(chunk)
                        if self.stored[block])

    def serialize(self) -> bytes:
        """The top uncompressed (`encode` gives what the artifact stores)."""
        return top_bytes(self.block_size, self.chunk_blocks, self.image_size, self.stored,
                         self.tops, self.offsets)

    def encode(self) -> bytes:
        """The top as the artifact stores it."""
        return zlib.compress(self.serialize(), INDEX_LEVEL)

    def encode_leaves(self) -> bytes:
        """The leaves as the artifact stores them (every chunk's must be known)."""
        return b"".join(self.stored_leaves(chunk) for chunk in range(self.chunk_count))

    @classmethod
    def parse(cls, encoded: bytes, anchor: IndexAnchor | None = None) -> "BlockIndex":
        """Parse a top as the artifact stores it (zlib); with `anchor`, only after its size
        and sha256 match it. No chunk's leaves are known yet."""
        if anchor is not None:
            if len(encoded) != anchor.size:
                raise StructureError(f"block index: {len(encoded)} bytes, the signed header "
                                     f"says {anchor.size}")
            actual = hashlib.sha256(encoded).hexdigest()
            if actual != anchor.sha256:
                raise ChecksumError("block index", anchor.sha256, actual)
        out = io.BytesIO()
        _inflate([encoded], out)
        index = cls.from_raw(out.getvalue())
        if anchor is not None and index.leaf_bytes != anchor.leaves:
            raise StructureError(f"block index: {index.leaf_bytes} bytes of leaves, the signed "
                                 f"header says {anchor.leaves}")
        return index

    @classmethod
    def from_raw(cls, data: bytes) -> "BlockIndex":
        """Parse an uncompressed top."""
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
        chunk_count = -(-block_count // chunk_blocks)
        view = memoryview(data)
        stored = view[_HEAD.size:_HEAD.size + block_count]
        flags = bytes(stored)
        if flags.count(1) + flags.count(0) != block_count or \
                (image_size % block_size and not flags[-1]):
            raise StructureError("block index: bad block flags")
        tops_end = _HEAD.size + block_count + chunk_count * HASH_SIZE
        offsets = array("Q")
        offsets.frombytes(view[tops_end:])
        if sys.byteorder == "big":
            offsets.byteswap()
        if any(a >= b for a, b in zip(offsets, offsets[1:], strict=False)):
            raise StructureError("block index: chunk offsets do not increase")
        hashes = bytearray(block_count * HASH_SIZE)
        zero = zero_digest(block_size)
        at = -1
        while (at := flags.find(0, at + 1)) >= 0:  # a zero block's leaf is known
            hashes[at * HASH_SIZE:(at + 1) * HASH_SIZE] = zero
        return cls(block_size, chunk_blocks, image_size, stored,
                   view[_HEAD.size + block_count:tops_end], offsets, hashes,
                   bytearray(chunk_count), _leaf_starts(flags, chunk_blocks, chunk_count))

    def describe(self, anchor: IndexAnchor) -> dict:
        return {"format": FORMAT, "block_size": self.block_size,
                "block_count": self.block_count, "chunk_size": self.chunk_size,
                "chunk_count": self.chunk_count, "image_size": self.image_size,
                "chunk_bytes": self.compressed_bytes, "index_bytes": anchor.area,
                "top_bytes": anchor.size, "leaf_bytes": anchor.leaves,
                "leaves_stored": self.leaf_starts[-1], "sha256": anchor.sha256}


def top_bytes(block_size: int, chunk_blocks: int, image_size: int, stored, tops,
              offsets: array) -> bytes:
    """A top, uncompressed, from its parts."""
    return (_HEAD.pack(MAGIC, block_size, chunk_blocks, image_size) + bytes(stored)
            + bytes(tops) + offsets_bytes(offsets))


def _leaf_starts(stored, chunk_blocks: int, chunk_count: int) -> array:
    starts = array("Q", [0])
    for chunk in range(chunk_count):
        starts.append(starts[-1] + bytes(stored[chunk * chunk_blocks:
                                                 (chunk + 1) * chunk_blocks]).count(1))
    return starts


def index_anchor(header: ArtifactHeader) -> IndexAnchor | None:
    """The anchor of an artifact's block index, or None when it has none."""
    for payload in header.payloads:
        if payload.type == "rootfs-image":
            return IndexAnchor.from_payload(payload)
    return None


def read_index(stream: BinaryIO, anchor: IndexAnchor) -> BlockIndex:
    """The index at the end of a seekable artifact file, its top checked against the anchor
    and every chunk's leaves against the top."""
    end = stream.seek(0, os.SEEK_END)
    start = end - anchor.area
    if start < 0:
        raise StructureError(f"block index: the artifact has {end} bytes, fewer than its "
                             f"index's {anchor.area}")
    stream.seek(end - anchor.size)
    index = BlockIndex.parse(stream.read(anchor.size), anchor)
    stream.seek(start)
    for chunk in range(index.chunk_count):
        first, last = index.leaf_span(chunk)
        index.accept_leaves(chunk, stream.read(last - first))
    return index


def copy_index(stream: BinaryIO, anchor: IndexAnchor, out: BinaryIO) -> None:
    """Copy the index as stored at the end of `stream` (checked by read_index first)."""
    stream.seek(-anchor.area, os.SEEK_END)
    remaining = anchor.area
    while remaining and (data := stream.read(min(1 << 20, remaining))):
        out.write(data)
        remaining -= len(data)


def verified_blocks(index: BlockIndex, chunk: int, compressed: bytes,
                    compression: str) -> Iterator[tuple[int, bytes]]:
    """(block, bytes) of a fetched chunk, each checked against its leaf before it is given."""
    if not index.known[chunk]:
        raise StructureError(f"chunk {chunk}: its leaves are not known")
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


def chunk_digest(leaves: bytes) -> bytes:
    """A chunk's top entry: the sha256 of its blocks' leaves (every block's, zeros' too, back
    to back), its first HASH_SIZE bytes."""
    return hashlib.sha256(leaves).digest()[:HASH_SIZE]


@functools.cache
def zero_digest(block_size: int) -> bytes:
    """The leaf of a whole block of zeros."""
    return block_digest(bytes(block_size))


def _raw_size(block_size: int, chunk_blocks: int, image_size: int) -> int:
    """The size of an uncompressed top."""
    block_count = -(-image_size // block_size)
    chunk_count = -(-block_count // chunk_blocks)
    return _HEAD.size + block_count + chunk_count * HASH_SIZE + (chunk_count + 1) * 8


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

