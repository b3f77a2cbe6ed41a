"""Which chunks of an indexed artifact a device must fetch, given what its slots already hold.

`plan_fetch` is pure: the caller says, through `find`, where a local slot holds a block with
a given hash (the target slot first, for an interrupted install, then the active slot), and
gets back the chunks to fetch as coalesced byte ranges of the artifact file, and what that
costs against a full download. `block_sources` yields the same decisions block by block,
for the installer that writes the slot. Zero blocks (most of a fresh filesystem's free space)
are never fetched. With `held`, a block the target slot already holds at its own place (an
interrupted install, or an unchanged block of the release the slot held before) is kept:
left out of the sources, a run at a time.

`SlotHashes` is one such `find`: the hash of every non-zero block of a slot, sorted, found
through the bucket of its first two bytes (20 bytes per block and 256 KiB of buckets; RAUC's
takes 36, a dict would take about five times that).

`survey_slots` reads the two slots of a device once each, side by side, for the adaptive
install, with only the index's top: the chunks whose top entry a slot matches in place (no
leaves needed for them), which blocks the target slot already holds in place, which ones the
active slot holds at the same place, and the active slot's `SlotHashes`. A block is hashed
there only when nothing cheaper proves it: a zero block is compared with zeros, and a target
block equal byte for byte to the active slot's block at the same place has that block's hash
(a whole chunk of them is compared at once). The leaves of the other chunks are then
fetched (`SlotSurvey.leaf_ranges`, `fetch_leaves`) and checked against the top before the
plan.
"""
import bisect
import os
from array import array
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO

from .block_index import (
    HASH_SIZE,
    BlockIndex,
    block_digest,
    data_content_offset,
    zero_digest,
)
from .errors import StructureError

Find = Callable[[bytes], object | None]  # where a local slot holds a block with this sha256
OpenRange = Callable[[int, int], AbstractContextManager[BinaryIO]]  # the bytes [start, end)

READ_SIZE = 1 << 20
MAX_GAP = 64 << 10  # fetch up to this many unneeded bytes rather than open another range

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


def block_sources(index: BlockIndex, find: Find, held: bytes | bytearray | None = None,
                  same: bytes | bytearray | None = None) -> Iterator[tuple[int, str, object]]:
    """(block, ZERO | LOCAL | FETCH, the location `find` gave or the chunk) for each block
    the target slot does not hold in place. `held`, when given, has a 1 for each block it
    holds (its hash proven): those are left as they are, a run at a time. `same`, when
    given, has a 1 for each block the active slot holds (its hash checked) at the block's own
    offset: that offset is taken without a search."""
    zero = zero_digest(index.block_size)
    for block in _not_held(held, index.block_count):
        digest = index.block_hash(block)
        if index.block_length(block) == index.block_size and digest == zero:
            yield block, ZERO, None
            continue
        if same is not None and same[block]:
            yield block, LOCAL, block * index.block_size
            continue
        where = find(digest)
        if where is not None:
            yield block, LOCAL, where
        else:
            yield block, FETCH, block // index.chunk_blocks


def _not_held(held: bytes | bytearray | None, count: int) -> Iterator[int]:
    """The blocks whose byte in `held` is 0 (all when there is none)."""
    if held is None:
        yield from range(count)
        return
    start = held.find(0)
    while start >= 0:
        end = held.find(1, start)
        yield from range(start, count if end < 0 else end)
        start = -1 if end < 0 else held.find(0, end)


def plan_fetch(index: BlockIndex, payload_offset: int, find: Find, *, artifact_size: int,
               index_size: int, index_fetched: int | None = None, max_gap: int = 0,
               held: bytes | bytearray | None = None,
               same: bytes | bytearray | None = None) -> FetchPlan:
    """The chunks to fetch, as ranges of the artifact file, adjacent ones (or ones at most
    `max_gap` bytes apart) coalesced. `payload_offset` is `ArtifactReader.payload_offset`;
    `artifact_size` the whole file's (a Range answer's Content-Range gives it), `index_size`
    the anchor's `area` (a full install downloads the file but the index); `index_fetched`
    what was fetched of the index (the top and the leaves fetched; default: all of it)."""
    needed = bytearray(index.chunk_count)
    counts = {ZERO: 0, LOCAL: 0, FETCH: 0}
    for _, kind, where in block_sources(index, find, held, same):
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
                     blocks_held=0 if held is None else held.count(1),
                     blocks_zero=counts[ZERO],
                     blocks_fetched=counts[FETCH],
                     head_bytes=base + (index_size if index_fetched is None else index_fetched),
                     full_bytes=full, needed=needed)


class SlotHashes:
    """The non-zero blocks of a slot (a file or block device) by sha256: `find(hash)` gives the
    byte offset of a block with that hash, or None."""

    RECORD = HASH_SIZE + 4

    def __init__(self, records: bytes | bytearray, starts: array, block_size: int):
        self._records = records
        self._starts = starts  # where each bucket (a hash's first two bytes) starts
        self.block_size = block_size
        self._count = len(records) // self.RECORD

    @classmethod
    def of_file(cls, path: str | os.PathLike, block_size: int,
                size: int | None = None) -> "SlotHashes":
        """Hash the whole non-zero blocks of the first `size` bytes (default: all) of `path`."""
        digests, blocks = bytearray(), array("I")
        zero = bytes(block_size)
        with open(path, "rb", buffering=0) as slot:
            size = min(size or 1 << 62, os.lseek(slot.fileno(), 0, os.SEEK_END))
            size -= size % block_size
            for position in range(0, size, READ_SIZE):
                data = os.pread(slot.fileno(), min(READ_SIZE, size - position), position)
                for offset in range(0, len(data) - len(data) % block_size, block_size):
                    content = data[offset:offset + block_size]
                    if content != zero:
                        digests += block_digest(content)
                        blocks.append((position + offset) // block_size)
        return cls.of_digests(digests, block_size, blocks)

    @classmethod
    def of_digests(cls, digests: bytes | bytearray, block_size: int,
                   blocks: array | None = None) -> "SlotHashes":
        """From blocks' hashes (HASH_SIZE bytes each), of the blocks numbered `blocks` (default:
        0, 1, 2...). The records (hash, block) are sorted without a Python object per block:
        placed by their hash's first two bytes (a counting sort), then each bucket, a handful
        of records, is sorted on its own."""
        count = len(digests) // HASH_SIZE
        starts = array("I", bytes(4 * 65537))
        for at in range(0, count * HASH_SIZE, HASH_SIZE):
            starts[(digests[at] << 8 | digests[at + 1]) + 1] += 1
        for bucket in range(65536):
            starts[bucket + 1] += starts[bucket]
        free = array("I", starts)
        records = bytearray(count * cls.RECORD)
        for position in range(count):
            at = position * HASH_SIZE
            bucket = digests[at] << 8 | digests[at + 1]
            place = free[bucket] * cls.RECORD
            free[bucket] += 1
            block = position if blocks is None else blocks[position]
            records[place:place + cls.RECORD] = digests[at:at + HASH_SIZE] + \
                block.to_bytes(4, "big")
        for bucket in range(65536):
            first, end = starts[bucket], starts[bucket + 1]
            if end - first > 1:
                chunk = records[first * cls.RECORD:end * cls.RECORD]
                ordered = sorted(chunk[i:i + cls.RECORD] for i in range(0, len(chunk), cls.RECORD))
                records[first * cls.RECORD:end * cls.RECORD] = b"".join(ordered)
        return cls(records, starts, block_size)

    def find(self, digest: bytes) -> int | None:
        """The byte offset of a block whose sha256 is `digest` (the lowest one), or None."""
        bucket = digest[0] << 8 | digest[1]
        end = self._starts[bucket + 1]
        position = bisect.bisect_left(self, digest, self._starts[bucket], end)
        if position < end and self[position] == digest:
            start = position * self.RECORD + HASH_SIZE
            return int.from_bytes(self._records[start:start + 4], "big") * self.block_size
        return None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: int) -> bytes:
        start = position * self.RECORD
        return bytes(self._records[start:start + HASH_SIZE])


@dataclass
class SlotSurvey:
    """What the two slots hold of the new image, from `survey_slots`."""

    held: bytearray  # 1 per block the target slot holds in place (proven; see survey_slots)
    same: bytearray  # 1 per block the active slot holds at its own place (hash checked)
    active: SlotHashes
    unknown: bytearray  # 1 per chunk that no slot matches in place: its leaves are fetched

    def leaf_ranges(self, index: BlockIndex, leaves_offset: int,
                    max_gap: int = MAX_GAP) -> list[ByteRange]:
        """The leaves of the unknown chunks, as ranges of the artifact file (`leaves_offset`:
        where the leaves start), coalesced as the chunks' are."""
        ranges: list[ByteRange] = []
        for chunk in (c for c in range(index.chunk_count) if self.unknown[c]):
            start, end = (leaves_offset + x for x in index.leaf_span(chunk))
            if start == end:
                continue  # all zeros: no leaves stored
            if ranges and start - ranges[-1].end <= max_gap:
                ranges[-1] = ByteRange(ranges[-1].start, end, ranges[-1].first, chunk)
            else:
                ranges.append(ByteRange(start, end, chunk, chunk))
        return ranges

    def fetch_leaves(self, index: BlockIndex, ranges: list[ByteRange],
                     open_range: OpenRange) -> None:
        """Fetch the unknown chunks' leaves range by range, check each chunk's against its top
        entry (`BlockIndex.accept_leaves`: ChecksumError or StructureError when they are not
        its) and settle which of its blocks the target slot holds in place: those whose leaf
        `survey_slots` left in `index.hashes` is the one fetched."""
        for byte_range in ranges:
            with open_range(byte_range.start, byte_range.end) as stream:
                for chunk in range(byte_range.first, byte_range.last + 1):
                    start, end = index.leaf_span(chunk)
                    data = _read_exactly(stream, end - start)
                    if self.unknown[chunk]:
                        self._settle(index, chunk, data)
        for chunk in range(index.chunk_count):
            if self.unknown[chunk]:  # all zeros, or not in the ranges (then refused here)
                self._settle(index, chunk, b"")

    def _settle(self, index: BlockIndex, chunk: int, stored_leaves: bytes) -> None:
        blocks = index.chunk_blocks_of(chunk)
        targets = bytes(index.hashes[blocks.start * HASH_SIZE:blocks.stop * HASH_SIZE])
        leaves = index.accept_leaves(chunk, stored_leaves)
        for position, block in enumerate(blocks):
            at = position * HASH_SIZE
            self.held[block] = self.held[block] and targets[at:at + HASH_SIZE] == \
                leaves[at:at + HASH_SIZE]
        self.unknown[chunk] = 0


def survey_slots(index: BlockIndex, target: str | os.PathLike,
                 active: str | os.PathLike) -> SlotSurvey:
    """Read the target and the active slot once, side by side, over the new image's extent,
    and match each chunk's top entry in place (the index's top: no leaves needed). A chunk
    whose leaves in the active slot give its top entry is `adopt`ed from there: each of its
    blocks is in the active slot at its place (`same`), and held by the target where its bytes
    are the active block's. Else its leaves in the target slot: a zero block's leaf is known,
    a block with the active block's bytes has that block's leaf, only the others are hashed;
    when they give its top entry, the target holds the whole chunk. Else the chunk is
    `unknown`: the target's leaves wait in `index.hashes` (and `held` says which are known)
    for `SlotSurvey.fetch_leaves`, which compares them with the fetched ones. The active
    slot's non-zero whole blocks are hashed once, into the table for the blocks that moved."""
    size, block_size, chunk_size = index.image_size, index.block_size, index.chunk_size
    zero, zero_leaf = bytes(block_size), zero_digest(block_size)
    held, same = bytearray(index.block_count), bytearray(index.block_count)
    unknown = bytearray(index.chunk_count)
    digests, blocks = bytearray(), array("I")
    read_size = max(1, READ_SIZE // chunk_size) * chunk_size
    with open(target, "rb", buffering=0) as target_file, \
            open(active, "rb", buffering=0) as active_file:
        for position in range(0, size, read_size):
            length = min(read_size, size - position)
            ours = os.pread(target_file.fileno(), length, position)
            theirs = os.pread(active_file.fileno(), length, position)
            for start in range(0, length, chunk_size):
                chunk = (position + start) // chunk_size
                first = chunk * index.chunk_blocks
                mine = ours[start:start + chunk_size]
                other = theirs[start:start + chunk_size]
                if len(mine) == len(other) == chunk_size and \
                        position + start + chunk_size <= size:
                    pairs = None  # a whole chunk in both slots: blocks taken apart if needed
                    theirs_leaves = [zero_leaf if (block := other[at:at + block_size]) == zero
                                     else block_digest(block)
                                     for at in range(0, chunk_size, block_size)]
                    for block, leaf in enumerate(theirs_leaves, first):
                        if leaf != zero_leaf:
                            digests += leaf
                            blocks.append(block)
                    if mine != other:
                        pairs = [(mine[at:at + block_size], other[at:at + block_size],
                                  leaf, block_size) for at, leaf in zip(
                                      range(0, chunk_size, block_size), theirs_leaves,
                                      strict=True)]
                else:  # the image's last chunk, or a slot that ends inside it
                    pairs = _block_pairs(index, chunk, mine, other, digests, blocks)
                    theirs_leaves = [leaf for _, _, leaf, _ in pairs]
                count = len(theirs_leaves)
                if None not in theirs_leaves and index.adopt(chunk, b"".join(theirs_leaves)):
                    same[first:first + count] = b"\1" * count
                    held[first:first + count] = b"\1" * count if mine == other else \
                        bytes(ours == theirs for ours, theirs, _, _ in pairs)
                    continue
                if mine == other and None not in theirs_leaves:
                    leaves = theirs_leaves  # the target's leaves: the top refused them already
                else:
                    leaves = [_target_leaf(pair, zero, zero_leaf) for pair in pairs]
                    if None not in leaves and index.adopt(chunk, b"".join(leaves)):
                        held[first:first + count] = b"\1" * count
                        continue
                unknown[chunk] = 1
                for block, leaf in enumerate(leaves, first):
                    if leaf is not None:
                        held[block] = 1  # until fetch_leaves compares the leaf
                        index.hashes[block * HASH_SIZE:(block + 1) * HASH_SIZE] = leaf
    return SlotSurvey(held, same, SlotHashes.of_digests(digests, block_size, blocks), unknown)


def _block_pairs(index: BlockIndex, chunk: int, mine: bytes, other: bytes, digests: bytearray,
                 blocks: array) -> list[tuple[bytes, bytes, bytes | None, int]]:
    """Per block of a chunk that is not whole in both slots: the target's bytes, the
    active's, the active's leaf (None where the active slot ends first) and the block's
    length in the image. The active slot's whole non-zero blocks go into its table."""
    block_size, zero = index.block_size, bytes(index.block_size)
    pairs = []
    for block in index.chunk_blocks_of(chunk):
        at = (block - chunk * index.chunk_blocks) * block_size
        ours, theirs = mine[at:at + block_size], other[at:at + block_size]
        leaf = None
        if len(theirs) == block_size and theirs != zero:
            leaf = block_digest(theirs)
            digests += leaf
            blocks.append(block)
        end = index.block_length(block)
        if end < block_size:  # the image ends inside this block
            ours, theirs = ours[:end], theirs[:end]
            leaf = block_digest(theirs) if len(theirs) == end else None
        elif leaf is None and len(theirs) == block_size:
            leaf = zero_digest(block_size)
        pairs.append((ours, theirs, leaf, end))
    return pairs


def _target_leaf(pair: tuple[bytes, bytes, bytes | None, int], zero: bytes,
                 zero_leaf: bytes) -> bytes | None:
    """The leaf of the target's block, hashed only when nothing cheaper proves it."""
    mine, other, leaf, end = pair
    if len(mine) < end:
        return None  # the target slot ends before the image
    if leaf is not None and mine == other:
        return leaf
    if mine == zero:
        return zero_leaf
    return block_digest(mine)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            raise StructureError(f"block index: the leaves ended {size - len(data)} bytes early")
        data += piece
    return bytes(data)
