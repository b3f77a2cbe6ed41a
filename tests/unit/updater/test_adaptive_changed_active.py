"""A block copied from the active slot that changed after `survey_slots` hashed it (the running
root filesystem, mounted read-write): taken from its chunk instead, the planned stream's when
the plan fetches that chunk anyway, else by a Range request of its own, counted in the
transfer and bounded by delta_max_share; the install goes on."""
import contextlib
import io
import random
import re

import pytest

from artifact import ArtifactReader
from artifact.block_index import data_content_offset, index_anchor, read_index
from testkit.artifacts import write_indexed_artifact_file
from updater.install import adaptive
from updater.install.installer import Fallback

KiB, MiB = 1 << 10, 1 << 20
BLOCK = 4096
CHUNK_BLOCKS = 16


def images() -> tuple[bytes, bytes]:
    """A 4 MiB old image (random blocks, 512 KiB of zeros) and a new one with changed blocks
    in chunks 0, 2, 18, 43 and 56."""
    rng = random.Random(11)
    old = bytearray(rng.randbytes(4 * MiB))
    old[512 * KiB:1 * MiB] = bytes(512 * KiB)
    new = bytearray(old)
    for block in (3, 40, 300, 700, 900):
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    return bytes(old), bytes(new)


OLD, NEW = images()
NEEDED = {0, 2, 18, 43, 56}


class FileRanges:
    """The artifact file by ranges (adaptive.Ranges), each range asked recorded; a byte at
    `corrupt_at` (an artifact offset) flipped in the answers."""

    def __init__(self, path, corrupt_at: int | None = None):
        self.path = path
        self.size = path.stat().st_size
        self.fetched = 0
        self.asked: list[tuple[int, int]] = []
        self.corrupt_at = corrupt_at

    @contextlib.contextmanager
    def open(self, start: int, end: int):
        self.fetched += end - start
        self.asked.append((start, end))
        with open(self.path, "rb") as stream:
            stream.seek(start)
            data = bytearray(stream.read(end - start))
        if self.corrupt_at is not None and start <= self.corrupt_at < end:
            data[self.corrupt_at - start] ^= 0xFF
        yield io.BytesIO(bytes(data))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_indexed_artifact_file(tmp_path_factory.mktemp("artifact") / "new.mender", NEW,
                                       name="new")


def chunk_range(artifact, chunk: int) -> tuple[int, int]:
    """[start, end) of a chunk's compressed bytes in the artifact file."""
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        index = read_index(stream, index_anchor(reader.header))
        base = data_content_offset(reader.payload_offset)
    start, end = index.chunk_span(chunk)
    return base + start, base + end


def install(tmp_path, monkeypatch, artifact, changed: list[int], *, max_share: float = 0.8,
            ranges: FileRanges | None = None) -> tuple[FileRanges, list[str]]:
    """Install NEW over an empty target, the active slot holding OLD, whose blocks `changed`
    change right after the survey."""
    tmp_path.mkdir(exist_ok=True)
    target, active = tmp_path / "target", tmp_path / "active"
    target.write_bytes(bytes(len(NEW)))
    active.write_bytes(OLD)
    survey = adaptive.survey_slots

    def survey_then_change(index, target, active):
        found = survey(index, target, active)
        with open(active, "r+b") as slot:
            for block in changed:
                slot.seek(block * BLOCK + 100)
                slot.write(b"written while the install ran")
        return found

    monkeypatch.setattr(adaptive, "survey_slots", survey_then_change)
    ranges, log = ranges or FileRanges(artifact), []
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        size = adaptive.install(reader, ranges, target=str(target), active=str(active),
                                max_share=max_share, sync_every=16 * MiB, log=log.append)
    assert target.read_bytes() == NEW
    assert size == len(NEW)
    return ranges, log


def changed_line(log: list[str]) -> str:
    [line] = [m for m in log if "changed in the active slot" in m]
    return line


def test_a_block_changed_in_the_active_slot_is_fetched_by_its_chunk_and_counted(
        tmp_path, monkeypatch, artifact):
    planned, _ = install(tmp_path / "planned", monkeypatch, artifact, [])
    # two blocks of chunk 6 (one Range for both: its blocks are kept), one of chunk 7
    ranges, log = install(tmp_path, monkeypatch, artifact, [100, 101, 120])
    extra = [chunk_range(artifact, 6), chunk_range(artifact, 7)]
    assert sorted(ranges.asked) == sorted(planned.asked + extra)
    extra_bytes = sum(end - start for start, end in extra)
    assert ranges.fetched == planned.fetched + extra_bytes
    assert changed_line(log) == (
        "adaptive install: 3 blocks changed in the active slot while the install ran: taken "
        f"from their chunks instead, 2 chunks fetched for them alone ({extra_bytes} bytes)")


def test_a_changed_block_of_a_chunk_the_plan_fetches_costs_no_extra_range(
        tmp_path, monkeypatch, artifact):
    """Block 1 comes before its chunk's first fetched block (3): the chunk is taken from the
    planned stream early; block 45 after its chunk's (40): the chunk is the one kept."""
    planned, _ = install(tmp_path / "planned", monkeypatch, artifact, [])
    ranges, log = install(tmp_path, monkeypatch, artifact, [1, 45])
    assert ranges.asked == planned.asked
    assert changed_line(log).endswith(": taken from their chunks instead, 0 chunks fetched for "
                                      "them alone (0 bytes)")


def test_changed_blocks_whose_chunks_pass_delta_max_share_fall_back(
        tmp_path, monkeypatch, artifact):
    planned, log = install(tmp_path / "planned", monkeypatch, artifact, [])
    full = int(re.search(r"of the full download \((\d+)\)", "\n".join(log))[1])
    max_share = (planned.fetched + 3.5 * 64 * KiB) / full  # room for three chunks
    changed = [chunk * CHUNK_BLOCKS + 5 for chunk in range(20, 40) if chunk not in NEEDED]
    ranges = FileRanges(artifact)
    with pytest.raises(Fallback) as error:
        install(tmp_path, monkeypatch, artifact, changed, max_share=max_share, ranges=ranges)
    assert re.fullmatch(
        r"blocks changed in the active slot while the install ran: fetching their chunks "
        r"takes the transfer to \d+\.\d% of the full download, above delta_max_share "
        rf"\({max_share:.0%}\)", str(error.value))
    # three chunks fetched for them, not the one that would pass it
    assert len([r for r in ranges.asked if r not in planned.asked]) == 3
    assert ranges.fetched <= max_share * full


def test_a_refetched_chunk_that_does_not_verify_falls_back(tmp_path, monkeypatch, artifact):
    start, end = chunk_range(artifact, 6)
    with pytest.raises(Fallback, match="a chunk from the server is refused"):
        install(tmp_path, monkeypatch, artifact, [100],
                ranges=FileRanges(artifact, corrupt_at=(start + end) // 2))
