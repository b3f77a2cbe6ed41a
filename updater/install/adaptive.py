"""The adaptive install of a rootfs artifact that carries a block index (artifact.block_index).

Each block of the new image is taken from the cheapest place that holds a block with its
hash: the target slot itself at the block's own place (what an interrupted install already
wrote, or an unchanged block of the release the slot held before: so a cut install resumes
where it was), the active slot (at the same place first, else at any place), a block of
zeros, and only then the artifact's chunk area, fetched by HTTP Range in the planner's
coalesced ranges. Every block is checked against its hash before it is written, and a kept
block is proven to hold its hash (`survey_slots`: zeros compared with zeros, a block equal
to the active slot's hashed block, or its own hash); then the slot is read back, past the
page cache, and its sha256 checked against the signed manifest: what a full install proves
before the slot may boot (its stream's sha256 and a CRC-32 read-back), in one pass. The
target is synced every `sync_every` bytes written, so that a power cut costs at most that
much of the work done (what the page cache held is lost; what reached the medium is in
place at the next try).

The index has two levels (artifact.block_index): the top, a hash per chunk of 16 blocks, is
fetched with the head and checked against the signed header; `survey_slots` matches each
chunk's top entry in the slots in place, and only the leaves (block hashes) of the chunks
that no slot matches in place are fetched, in coalesced ranges, each chunk's checked against
its top entry before the plan uses them.

Each slot is read once before the plan (`survey_slots`, side by side), and the target once
more when it is written (the read-back); a non-zero block is hashed once in the survey
unless the active slot's block at the same place has its bytes, a copied or fetched block
once more when it is written, and the whole image once (its sha256, as read back). The
write pass touches only the blocks the target lacks: a block kept in place is not read
there (the read-back's sha256 covers it, and would fail if it changed since the survey).

The active slot is the running root filesystem, which a device's image may mount read-write:
a block copied from it may have changed since `survey_slots` hashed it. Such a block is taken
from its chunk instead (`Chunks.changed_block`): from the planned ranges when the plan fetches that
chunk anyway (it is the one kept, or the next one in their stream), else by one Range request
of its own, beside the planned range's open stream (each stream has its own connection:
updater.http.Connections.open, a requests pool in the fleet simulator); its blocks checked as
a fetched chunk's are, those bytes counted in the transfer, and the count logged at the end.

Whatever stops it — no index, an index that does not verify, a transfer above
`delta_max_share` of the full download (planned, or grown by the chunks of blocks that changed
in the active slot), a server that ignores Range, a block that does not match — raises
`Fallback` with the reason, and the agent streams the full payload instead.

Memory: the leaves (16 bytes per block: the slots' own for the chunks they match, the
fetched ones for the others), the top (one byte per block, 24 per chunk), two bytes per
block (held, same place), the active slot's non-zero blocks sorted by hash (20 bytes each):
at most 41 bytes per block; one chunk (the last fetched, planned or not) and 1 MiB buffers.
"""
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol

from artifact.block_index import (
    CHUNK_COMPRESSIONS,
    BlockIndex,
    IndexAnchor,
    block_digest,
    data_content_offset,
    verified_blocks,
)
from artifact.block_plan import (
    FETCH,
    LOCAL,
    MAX_GAP,
    block_sources,
    plan_fetch,
    survey_slots,
)
from artifact.compression import compression_of
from artifact.errors import ArtifactError, ChecksumError

from .. import failpoints, markers
from .installer import Fallback, stats_line
from .medium import READ_SIZE, medium_chunks

WRITE_SIZE = 1 << 20

class Ranges(Protocol):
    """The artifact by ranges: its size, and `open(start, end)` for the bytes [start, end)."""

    size: int
    fetched: int

    def open(self, start: int, end: int) -> AbstractContextManager[BinaryIO]: ...


def install(reader, ranges: Ranges, *, target: str, active: str, max_share: float,
            sync_every: int, log: Callable[[str], None]) -> int:
    """Write the payload's image to `target` from the cheapest sources, fsynced, and read it
    back against the signed manifest's sha256; return its size."""
    [payload] = reader.header.payloads
    try:
        anchor = IndexAnchor.from_payload(payload)
    except ArtifactError as error:  # format 1, of agents before the two-level index
        raise Fallback(f"the block index is not readable: {error}") from None
    if anchor is None:
        raise Fallback("the artifact has no block index")
    member = reader.data_member()
    compression = compression_of(member.name, "data/0000.tar")
    if compression not in CHUNK_COMPRESSIONS:
        raise Fallback(f"its payload is {compression}-compressed, not in chunks")
    if member.offset_data != data_content_offset(reader.payload_offset):
        raise Fallback("its data member has an extended tar header: the index's chunk "
                       "offsets do not apply")
    [name] = payload.files
    expected = reader.manifest[f"data/0000/{name}"]
    with ranges.open(ranges.size - anchor.size, ranges.size) as stream:
        encoded = _read_exactly(stream, anchor.size)
    try:
        index = BlockIndex.parse(encoded, anchor)
    except ArtifactError as error:
        raise Fallback(f"the block index does not verify: {error}") from None
    del encoded
    survey = survey_slots(index, target, active)
    leaf_ranges = survey.leaf_ranges(index, ranges.size - anchor.area, MAX_GAP)
    unknown = sum(survey.unknown)
    try:
        survey.fetch_leaves(index, leaf_ranges, ranges.open)
    except ArtifactError as error:
        raise Fallback(f"the block index's leaves are refused: {error}") from None
    plan = plan_fetch(index, reader.payload_offset, survey.active.find, artifact_size=ranges.size,
                      index_size=anchor.area, index_fetched=anchor.size + sum(
                          r.size for r in leaf_ranges), max_gap=MAX_GAP,
                      held=survey.held, same=survey.same)
    log(f"adaptive install: {index.chunk_count - unknown} of {index.chunk_count} chunks "
        f"match a slot in place; the leaves of the {unknown} others: "
        f"{plan.head_bytes - data_content_offset(reader.payload_offset) - anchor.size} bytes "
        f"in {len(leaf_ranges)} ranges")
    planned = ranges.fetched + plan.range_bytes
    share = planned / plan.full_bytes
    log(f"adaptive install: of {index.block_count} blocks, {plan.blocks_held} in place, "
        f"{plan.blocks_local} from the active slot, {plan.blocks_zero} zero, "
        f"{plan.blocks_fetched} fetched in {len(plan.ranges)} ranges: {planned} bytes, "
        f"{share:.1%} of the full download ({plan.full_bytes})")
    if share > max_share:
        raise Fallback(f"the planned transfer is {share:.1%} of the full download, above "
                       f"delta_max_share ({max_share:.0%})")
    chunks = Chunks(index, plan, ranges, compression, data_content_offset(reader.payload_offset),
                    max_share=max_share, planned=planned)
    sources = block_sources(index, survey.active.find, survey.held, survey.same)
    # the console's write tenths are of the bytes written, not of the slot
    to_write = max(index.image_size - plan.blocks_held * index.block_size, 0)
    _write(index, sources, chunks, target, active, sync_every, to_write)
    if chunks.changed:
        log(f"adaptive install: {chunks.changed} blocks changed in the active slot while the "
            f"install ran: taken from their chunks instead, {chunks.refetched} chunks fetched "
            f"for them alone ({chunks.refetched_bytes} bytes)")
    actual = slot_sha256(target, index.image_size)
    if actual != expected:
        raise Fallback(str(ChecksumError(f"data/0000/{name} as read back from {target}",
                                         expected, actual)))
    log(stats_line("adaptive", ranges.fetched, plan.full_bytes))
    return index.image_size


def _write(index: BlockIndex, sources, chunks: "Chunks", target: str, active: str,
           sync_every: int, to_write: int) -> None:
    """Write the blocks the target slot lacks (`sources`: the held ones are not among them,
    `survey_slots` proved their hashes), each checked against its hash first; fsynced."""
    zero = bytes(index.block_size)
    crash_at = failpoints.payload_offset()
    fd = os.open(target, os.O_RDWR)
    try:
        old = SlotReader(os.open(active, os.O_RDONLY))
        writer = SlotWriter(fd, crash_at, sync_every, markers.WriteProgress(to_write))
        try:
            for block, kind, where in sources:
                length = index.block_length(block)
                if kind == LOCAL:
                    content = old.read(where, length)
                    if block_digest(content) != index.block_hash(block):
                        content = chunks.changed_block(block)  # the slot changed since
                elif kind == FETCH:
                    content = chunks.block(block)
                else:
                    content = zero[:length]
                writer.write(block * index.block_size, content)
            writer.flush()
        finally:
            os.close(old.fd)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, index.image_size)  # a slot file: no tail of what it held
        os.fsync(fd)
    finally:
        os.close(fd)


def slot_sha256(target: str, size: int) -> str:
    """The sha256 of the slot's first `size` bytes as the medium holds them: the image as
    the next boot will find it."""
    digest = hashlib.sha256()
    read = 0
    for chunk in medium_chunks(target, 0, size):
        digest.update(chunk)
        read += len(chunk)
    if read < size:
        raise Fallback(f"slot {target} ends after {read} bytes")
    return digest.hexdigest()


class Chunks:
    """The verified blocks of the chunks the install fetches, the last chunk's kept for its
    next blocks: the planned ones in their ranges' order (`block`), and those of a block
    copied from the active slot that no longer has its hash (`changed_block`). `planned`
    bytes are the transfer planned; with the chunks fetched for changed blocks it stays at
    most `max_share` of the full download."""

    def __init__(self, index: BlockIndex, plan, ranges: Ranges, compression: str, base: int,
                 *, max_share: float, planned: int):
        self.index = index
        self.plan = plan
        self.ranges = ranges
        self.compression = compression
        self.base = base  # where the chunk area's offsets start in the artifact file
        self.max_share = max_share
        self.planned = planned
        self.stream = _fetched_chunks(index, plan, ranges, compression)
        self.chunk = -1  # the chunk whose blocks are kept
        self.blocks: dict[int, bytes] = {}
        self.changed = 0  # blocks changed in the active slot
        self.refetched = 0  # chunks fetched for them, outside the plan
        self.refetched_bytes = 0

    def block(self, block: int) -> bytes:
        """A planned block: its chunk is the one kept, or the next in the planned ranges."""
        chunk = block // self.index.chunk_blocks
        if chunk != self.chunk:
            self.chunk, self.blocks = chunk, dict(next(self.stream))
        return self.blocks[block]

    def changed_block(self, block: int) -> bytes:
        """A block that changed in the active slot, from its chunk: the planned ranges' when
        the plan fetches it (every chunk before it in their order was fetched already, for a
        block before this one), else by a Range request of its own."""
        self.changed += 1
        chunk = block // self.index.chunk_blocks
        if chunk == self.chunk or self.plan.needed[chunk]:
            return self.block(block)
        start, end = (self.base + at for at in self.index.chunk_span(chunk))
        share = (self.planned + self.refetched_bytes + end - start) / self.plan.full_bytes
        if share > self.max_share:
            raise Fallback(f"blocks changed in the active slot while the install ran: "
                           f"fetching their chunks takes the transfer to {share:.1%} of the "
                           f"full download, above delta_max_share ({self.max_share:.0%})")
        with self.ranges.open(start, end) as stream:
            data = _read_exactly(stream, end - start)
        self.refetched += 1
        self.refetched_bytes += end - start
        self.chunk, self.blocks = chunk, dict(_verified(self.index, chunk, data,
                                                        self.compression))
        return self.blocks[block]


def _fetched_chunks(index: BlockIndex, plan, ranges: Ranges,
                    compression: str) -> Iterator[list[tuple[int, bytes]]]:
    """The verified blocks of each chunk to fetch, in order, read range by range."""
    for byte_range in plan.ranges:
        with ranges.open(byte_range.start, byte_range.end) as stream:
            for chunk in range(byte_range.first, byte_range.last + 1):
                start, end = index.chunk_span(chunk)
                data = _read_exactly(stream, end - start)
                if plan.needed[chunk]:
                    yield _verified(index, chunk, data, compression)


def _verified(index: BlockIndex, chunk: int, data: bytes,
              compression: str) -> list[tuple[int, bytes]]:
    try:
        return list(verified_blocks(index, chunk, data, compression))
    except ArtifactError as error:
        raise Fallback(f"a chunk from the server is refused: {error}") from None


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            raise Fallback(f"the server's answer ended {size - len(data)} bytes early")
        data += piece
    return bytes(data)


class SlotReader:
    """Reads of a slot through a READ_SIZE window (blocks mostly come in order)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.start = 0
        self.window = b""

    def read(self, offset: int, length: int) -> bytes:
        if not self.start <= offset or offset + length > self.start + len(self.window):
            self.start, self.window = offset, os.pread(self.fd, max(READ_SIZE, length), offset)
        return self.window[offset - self.start:offset - self.start + length]


class SlotWriter:
    """Writes of adjacent blocks gathered into WRITE_SIZE writes; an fdatasync once
    `sync_every` bytes were written since the last; the console's write markers (the
    tenths of the bytes written, the slot offset each write ended at)."""

    def __init__(self, fd: int, crash_at: int | None, sync_every: int,
                 progress: markers.WriteProgress):
        self.fd = fd
        self.crash_at = crash_at
        self.sync_every = sync_every
        self.progress = progress
        self.unsynced = 0
        self.written = 0
        self.start = 0
        self.pending = bytearray()

    def write(self, offset: int, data: bytes) -> None:
        if self.pending and (offset != self.start + len(self.pending)
                             or len(self.pending) >= WRITE_SIZE):
            self.flush()
        if not self.pending:
            self.start = offset
        self.pending += data

    def flush(self) -> None:
        if not self.pending:
            return
        data, offset = memoryview(self.pending), self.start
        if self.crash_at is not None and offset <= self.crash_at < offset + len(data):
            os.pwrite(self.fd, data[:self.crash_at - offset], offset)
            failpoints.crash(f"payload:{self.crash_at}")
        while data:
            written = os.pwrite(self.fd, data, offset)
            data, offset = data[written:], offset + written
        self.unsynced += len(self.pending)
        self.written += len(self.pending)
        if self.unsynced >= self.sync_every:
            os.fdatasync(self.fd)
            self.unsynced = 0
        self.pending = bytearray()
        self.progress.update(self.written, offset)
