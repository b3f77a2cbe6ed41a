"""Which chunks of an indexed artifact a device must fetch, given what its slots already hold.

`plan_fetch` is pure: the caller says, through `find`, where a local slot holds a block with
a given hash (the target slot first, for an interrupted install, then the active slot), and
gets back the chunks to fetch as coalesced byte ranges of the artifact file, and what that
costs against a full download. `block_sources` yields the same decisions block by block,
for the installer that writes the slot. Zero blocks (most of a fresh filesystem's free space)
are never fetched. With `held`, a block the target slot already holds at its own place (an
interrupted install, or an unchanged block of the release the slot held before) is kept.

`SlotHashes` is one such `find`: the hash of every block of a slot, sorted, searched with
bisect (20 bytes per block; RAUC's takes 36, a dict would take about five times that).
"""
import bisect
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .block_index import HASH_SIZE, BlockIndex, block_digest, data_content_offset

Find = Callable[[bytes], object | None]  # where a local slot holds a block with this sha256
Held = Callable[[int, bytes], bool]  # does the target slot hold this block's hash in place

HELD = "held"
ZERO = "zero"
LOCAL = "local"
FETCH = "fetch"


@dataclass(frozen=True)
class ByteRange:
    """[start, end) of the artifact file, and the chunks it holds (`first` to `last`)."""

    start: int
    end: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def header(self) -> str:
        """The HTTP Range header's value."""
        return f"bytes={self.start}-{self.end - 1}"


@dataclass
class FetchPlan:
    ranges: list[ByteRange]
    chunks: int  # chunks to fetch
    blocks_local: int
    blocks_zero: int
    blocks_held: int  # already in place in the target slot
    blocks_fetched: int  # blocks whose chunk is fetched (a chunk holds several)
    head_bytes: int  # the artifact's head and the index, fetched before the plan
    full_bytes: int  # what a full install downloads: the artifact up to its tar end
    needed: bytearray = field(repr=False)  # 1 per chunk to fetch

    @property
    def range_bytes(self) -> int:
        return sum(r.size for r in self.ranges)

    @property
    def total_bytes(self) -> int:
        """Everything the adaptive install downloads."""
        return self.head_bytes + self.range_bytes

    @property
    def share(self) -> float:
        """The adaptive install's bytes as a share of the full download."""
        return self.total_bytes / self.full_bytes

    def describe(self) -> dict:
        return {"ranges": len(self.ranges), "chunks": self.chunks,
                "blocks_held": self.blocks_held, "blocks_local": self.blocks_local,
                "blocks_zero": self.blocks_zero,
                "blocks_fetched": self.blocks_fetched, "bytes": self.total_bytes,
                "full_bytes": self.full_bytes, "share": round(self.share, 4)}


def zero_hash(length: int) -> bytes:
    return block_digest(bytes(length))


def block_sources(index: BlockIndex, find: Find,
                  held: Held | None = None) -> Iterator[tuple[int, str, object]]:
    """(block, HELD | ZERO | LOCAL | FETCH, the location `find` gave or the chunk) for each
    block."""
    zero = zero_hash(index.block_size)
    for block in range(index.block_count):
        digest = index.block_hash(block)
        if held is not None and held(block, digest):
            yield block, HELD, None
            continue
        if index.block_length(block) == index.block_size and digest == zero:
            yield block, ZERO, None
            continue
        where = find(digest)
        if where is not None:
            yield block, LOCAL, where
        else:
            yield block, FETCH, block // index.chunk_blocks


def plan_fetch(index: BlockIndex, payload_offset: int, find: Find, *, artifact_size: int,
               index_size: int, max_gap: int = 0, held: Held | None = None) -> FetchPlan:
    """The chunks to fetch, as ranges of the artifact file, adjacent ones (or ones at most
    `max_gap` bytes apart) coalesced. `payload_offset` is `ArtifactReader.payload_offset`;
    `artifact_size` the whole file's (a Range answer's Content-Range gives it), `index_size`
    the anchor's: a full install downloads the file but the index."""
    needed = bytearray(index.chunk_count)
    counts = {HELD: 0, ZERO: 0, LOCAL: 0, FETCH: 0}
    for _, kind, where in block_sources(index, find, held):
        counts[kind] += 1
        if kind == FETCH:
            needed[where] = 1
    base = data_content_offset(payload_offset)
    ranges: list[ByteRange] = []
    for chunk in (c for c in range(index.chunk_count) if needed[c]):
        start, end = index.chunk_span(chunk)
        start, end = base + start, base + end
        if ranges and start - ranges[-1].end <= max_gap:
            ranges[-1] = ByteRange(ranges[-1].start, end, ranges[-1].first, chunk)
        else:
            ranges.append(ByteRange(start, end, chunk, chunk))
    full = artifact_size - index_size
    return FetchPlan(ranges=ranges, chunks=sum(needed), blocks_local=counts[LOCAL],
                     blocks_held=counts[HELD], blocks_zero=counts[ZERO],
                     blocks_fetched=counts[FETCH],
                     head_bytes=base + index_size, full_bytes=full, needed=needed)


def slot_digests(path: str | os.PathLike, block_size: int, size: int,
                 whole_blocks: bool = False) -> bytes:
    """The hash of each block of the first `size` bytes of `path` (fewer if it is shorter), in
    order (HASH_SIZE bytes each); a last partial block is hashed over its bytes, as the index
    does, unless `whole_blocks`."""
    digests = bytearray()
    with open(path, "rb", buffering=0) as slot:
        size = min(size, os.lseek(slot.fileno(), 0, os.SEEK_END))
        if whole_blocks:
            size -= size % block_size
        position = 0
        while position < size:
            data = os.pread(slot.fileno(), min(1 << 20, size - position), position)
            if not data:
                break
            view = memoryview(data)
            for offset in range(0, len(data), block_size):
                digests += block_digest(view[offset:offset + block_size])
            position += len(data)
    return bytes(digests)


class SlotHashes:
    """The blocks of a slot (a file or block device) by sha256: `find(hash)` gives the byte
    offset of a block with that hash, or None."""

    RECORD = HASH_SIZE + 4

    def __init__(self, records: bytes | bytearray, block_size: int):
        self._records = records
        self.block_size = block_size
        self._count = len(records) // self.RECORD

    @classmethod
    def of_file(cls, path: str | os.PathLike, block_size: int,
                size: int | None = None) -> "SlotHashes":
        """Hash the whole blocks of the first `size` bytes (default: all) of `path`."""
        return cls.of_digests(slot_digests(path, block_size, size or 1 << 62, True), block_size)

    @classmethod
    def of_digests(cls, digests: bytes, block_size: int) -> "SlotHashes":
        """From a slot's block hashes in order. The records (hash, block) are sorted without a
        Python object per block: placed by their hash's first two bytes (a counting sort),
        then each bucket, a handful of records, is sorted on its own."""
        count = len(digests) // HASH_SIZE
        starts = array("L", bytes(array("L").itemsize * 65537))
        for block in range(count):
            starts[int.from_bytes(digests[block * HASH_SIZE:block * HASH_SIZE + 2], "big")
                   + 1] += 1
        for bucket in range(65536):
            starts[bucket + 1] += starts[bucket]
        free = array("L", starts)
        records = bytearray(count * cls.RECORD)
        for block in range(count):
            digest = digests[block * HASH_SIZE:(block + 1) * HASH_SIZE]
            bucket = int.from_bytes(digest[:2], "big")
            at = free[bucket] * cls.RECORD
            free[bucket] += 1
            records[at:at + cls.RECORD] = digest + block.to_bytes(4, "big")
        for bucket in range(65536):
            first, end = starts[bucket], starts[bucket + 1]
            if end - first > 1:
                chunk = records[first * cls.RECORD:end * cls.RECORD]
                ordered = sorted(chunk[i:i + cls.RECORD] for i in range(0, len(chunk), cls.RECORD))
                records[first * cls.RECORD:end * cls.RECORD] = b"".join(ordered)
        return cls(records, block_size)

    def find(self, digest: bytes) -> int | None:
        """The byte offset of a block whose sha256 is `digest` (the lowest one), or None."""
        position = bisect.bisect_left(self, digest)
        if position < self._count and self[position] == digest:
            start = position * self.RECORD + HASH_SIZE
            return int.from_bytes(self._records[start:start + 4], "big") * self.block_size
        return None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: int) -> bytes:
        start = position * self.RECORD
        return bytes(self._records[start:start + HASH_SIZE])
