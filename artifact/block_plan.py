"""Which chunks of an indexed artifact a device must fetch, given what its slots already hold.

`plan_fetch` is pure: the caller says, through `find`, where a local slot holds a block with
a given hash (the target slot first, for an interrupted install, then the active slot), and
gets back the chunks to fetch as coalesced byte ranges of the artifact file, and what that
costs against a full download. `block_sources` yields the same decisions block by block,
for the installer that writes the slot. Zero blocks (most of a fresh filesystem's free space)
are never fetched.

`SlotHashes` is one such `find`: the hash of every block of a slot, sorted, searched with
bisect (20 bytes per block; RAUC's takes 36, a dict would take about five times that).
"""
import bisect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .block_index import HASH_SIZE, BlockIndex, block_digest, data_content_offset

Find = Callable[[bytes], object | None]  # where a local slot holds a block with this sha256

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
                "blocks_local": self.blocks_local, "blocks_zero": self.blocks_zero,
                "blocks_fetched": self.blocks_fetched, "bytes": self.total_bytes,
                "full_bytes": self.full_bytes, "share": round(self.share, 4)}


def zero_hash(length: int) -> bytes:
    return block_digest(bytes(length))


def block_sources(index: BlockIndex, find: Find) -> Iterator[tuple[int, str, object]]:
    """(block, ZERO | LOCAL | FETCH, the location `find` gave or the chunk) for each block."""
    zero = zero_hash(index.block_size)
    for block in range(index.block_count):
        digest = index.block_hash(block)
        if index.block_length(block) == index.block_size and digest == zero:
            yield block, ZERO, None
            continue
        where = find(digest)
        if where is not None:
            yield block, LOCAL, where
        else:
            yield block, FETCH, block // index.chunk_blocks


def plan_fetch(index: BlockIndex, payload_offset: int, find: Find, *, artifact_size: int,
               index_size: int, max_gap: int = 0) -> FetchPlan:
    """The chunks to fetch, as ranges of the artifact file, adjacent ones (or ones at most
    `max_gap` bytes apart) coalesced. `payload_offset` is `ArtifactReader.payload_offset`;
    `artifact_size` the whole file's (a Range answer's Content-Range gives it), `index_size`
    the anchor's: a full install downloads the file but the index."""
    needed = bytearray(index.chunk_count)
    counts = {ZERO: 0, LOCAL: 0, FETCH: 0}
    for _, kind, where in block_sources(index, find):
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
                     blocks_zero=counts[ZERO], blocks_fetched=counts[FETCH],
                     head_bytes=base + index_size, full_bytes=full, needed=needed)


class SlotHashes:
    """The blocks of a slot (a file or block device) by sha256: `find(hash)` gives the byte
    offset of a block with that hash, or None."""

    RECORD = HASH_SIZE + 4

    def __init__(self, records: bytes, block_size: int):
        self._records = records
        self.block_size = block_size
        self._count = len(records) // self.RECORD

    @classmethod
    def of_file(cls, path: str | os.PathLike, block_size: int,
                size: int | None = None) -> "SlotHashes":
        """Hash the first `size` bytes (default: all) of `path`, block by block."""
        records = []
        with open(path, "rb", buffering=0) as slot:
            if size is None:
                size = os.lseek(slot.fileno(), 0, os.SEEK_END)
            position = 0
            while position + block_size <= size:
                data = os.pread(slot.fileno(), min(1 << 20, size - position), position)
                if not data:
                    break
                whole = len(data) - len(data) % block_size
                for offset in range(0, whole, block_size):
                    digest = block_digest(data[offset:offset + block_size])
                    records.append(digest + ((position + offset) // block_size).to_bytes(4, "big"))
                position += whole
                if whole == 0:
                    break
        records.sort()
        return cls(b"".join(records), block_size)

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
        return self._records[start:start + HASH_SIZE]
