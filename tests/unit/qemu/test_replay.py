"""The write-log replayer on logs built by hand in the dm-log-writes format QEMU writes."""
import json
import struct
import subprocess
from pathlib import Path

import pytest

from qemu.replay import (
    DISCARD,
    FLUSH,
    MAGIC,
    Contents,
    CrashState,
    Expectations,
    LogError,
    Recording,
    Region,
    apply_extents,
    crash_states,
    epochs,
    extents,
    group_states,
    read_log,
    sample_groups,
    write_overlay,
)

SECTOR = 512


def sector(byte: int) -> bytes:
    return bytes([byte]) * SECTOR


class LogBuilder:
    """A log as blklogwrites writes it: the superblock counts entries up to the last flush."""

    def __init__(self):
        self.entries: list[bytes] = []
        self.counted = 0

    def write(self, at: int, data: bytes, flags: int = 0) -> "LogBuilder":
        header = struct.pack("<QQQQ", at, len(data) // SECTOR, flags, 0).ljust(SECTOR, b"\0")
        self.entries.append(header + data)
        return self

    def flush(self) -> "LogBuilder":
        self.write(0, b"", FLUSH)
        self.counted = len(self.entries)
        return self

    def discard(self, at: int, sectors: int) -> "LogBuilder":
        header = struct.pack("<QQQQ", at, sectors, DISCARD, 0).ljust(SECTOR, b"\0")
        self.entries.append(header)
        return self

    def save(self, path: Path) -> Path:
        superblock = struct.pack("<QQQI", MAGIC, 1, self.counted, SECTOR).ljust(SECTOR, b"\0")
        path.write_bytes(superblock + b"".join(self.entries))
        return path


@pytest.fixture
def base(tmp_path) -> Path:
    """A 16-sector raw disk of sector-number bytes (sector n is all n)."""
    path = tmp_path / "base.raw"
    path.write_bytes(b"".join(sector(n) for n in range(16)))
    return path


def disk_after(log, state: CrashState, base: Path, tmp_path: Path) -> list[int]:
    """The first byte of each sector of the disk in `state`."""
    disk = tmp_path / "state.raw"
    disk.write_bytes(base.read_bytes())
    apply_extents(log, extents(log, state), disk)
    data = disk.read_bytes()
    return [data[n * SECTOR] for n in range(16)]


def test_read_log_reads_entries_past_the_counted_ones_and_leaves_a_torn_one_out(tmp_path):
    builder = LogBuilder().write(3, sector(0xA1)).flush().write(5, sector(0xB1) + sector(0xB2))
    path = builder.save(tmp_path / "writes.log")
    with open(path, "ab") as log:  # a last entry whose data never reached the log
        log.write(struct.pack("<QQQQ", 9, 4, 0, 0).ljust(SECTOR, b"\0") + sector(1))
    log = read_log(path)
    assert log.counted == 2
    assert [(w.sector, w.sectors, w.flags) for w in log.writes] == [(3, 1, 0), (0, 0, FLUSH),
                                                                     (5, 2, 0)]
    assert path.read_bytes()[log.writes[2].data_offset:][:SECTOR] == sector(0xB1)


def test_read_log_refuses_what_is_not_a_write_log(tmp_path):
    path = tmp_path / "writes.log"
    path.write_bytes(b"")
    with pytest.raises(LogError, match="empty"):
        read_log(path)
    path.write_bytes(struct.pack("<QQQI", 0x1234, 1, 0, SECTOR).ljust(SECTOR, b"\0"))
    with pytest.raises(LogError, match="magic"):
        read_log(path)
    path.write_bytes(struct.pack("<QQQI", MAGIC, 1, 0, SECTOR).ljust(SECTOR, b"\0")
                     + struct.pack("<QQQQ", 0, 0, 64, 0).ljust(SECTOR, b"\0"))
    with pytest.raises(LogError, match="bad flags"):
        read_log(path)


def test_every_flush_point_and_the_end_of_the_log(tmp_path, base):
    path = (LogBuilder().write(1, sector(0xA1)).flush()
            .write(2, sector(0xB2)).write(3, sector(0xB3)).flush()
            .write(4, sector(0xC4)).save(tmp_path / "writes.log"))
    log = read_log(path)
    assert epochs(log) == [(0, [0]), (2, [2, 3]), (5, [5])]
    states = crash_states(log, seed=1)
    flushes = [s for s in states if s.kind == "flush"]
    assert [disk_after(log, s, base, tmp_path)[:6] for s in flushes] == [
        [0, 0xA1, 2, 3, 4, 5], [0, 0xA1, 0xB2, 0xB3, 4, 5]]
    (end,) = [s for s in states if s.kind == "end"]
    assert disk_after(log, end, base, tmp_path)[:6] == [0, 0xA1, 0xB2, 0xB3, 0xC4, 5]


def test_partial_epochs_lose_a_prefix_a_subset_or_tear_the_last_write(tmp_path, base):
    builder = LogBuilder().write(1, sector(0xA1)).flush()
    for n in range(2, 8):
        builder.write(n, sector(0xB0 + n))
    builder.write(8, sector(0xD1) + sector(0xD2) + sector(0xD3) + sector(0xD4)).flush()
    log = read_log(builder.save(tmp_path / "writes.log"))
    states = crash_states(log, seed=7, samples=3)
    epoch = [s for s in states if s.label.startswith("epoch 1")]
    assert {s.kind for s in epoch} == {"lost", "prefix", "subset", "torn"}
    for state in epoch:
        disk = disk_after(log, state, base, tmp_path)
        assert disk[1] == 0xA1  # flushed before the epoch: always there
        kept = [n for n in range(2, 8) if disk[n] == 0xB0 + n]
        assert all(disk[n] == n for n in range(2, 8) if n not in kept)  # else untouched
        if state.kind == "lost":
            assert kept == [] and disk[8:12] == [8, 9, 10, 11]
        if state.kind == "prefix":
            assert kept == list(range(2, 2 + len(kept))) and 0 < len(kept) < 7
        if state.kind == "torn":  # only the 4-sector write can tear
            cut = state.torn_sectors
            assert disk[8:12] == [0xD1, 0xD2, 0xD3, 0xD4][:cut] + [8, 9, 10, 11][cut:]
            assert 0 < cut < 4
    # Seeded: the same seed draws the same states.
    assert crash_states(log, seed=7, samples=3) == states
    assert crash_states(log, seed=8, samples=3) != states


def test_a_log_that_starts_later_counts_its_first_entries_as_durable(tmp_path, base):
    log = read_log(LogBuilder().write(1, sector(0xA1)).write(2, sector(0xA2))
                   .write(3, sector(0xA3)).flush().save(tmp_path / "writes.log"))
    states = crash_states(log, start=2, seed=0)
    assert {s.durable for s in states} == {2, 4}
    lost = next(s for s in states if s.kind == "lost")
    assert disk_after(log, lost, base, tmp_path)[:4] == [0, 0xA1, 0xA2, 3]


def test_a_discard_reads_as_zeroes(tmp_path, base):
    log = read_log(LogBuilder().discard(2, 2).flush().save(tmp_path / "writes.log"))
    flush = next(s for s in crash_states(log) if s.kind == "flush")
    assert disk_after(log, flush, base, tmp_path)[:5] == [0, 1, 0, 0, 4]


def test_states_group_when_byte_identical_in_each_region(tmp_path, base):
    log = read_log(LogBuilder()
                   .write(10, sector(0xE1)).flush()     # the slot
                   .write(1, sector(0xA1)).flush()      # the boot region
                   .write(1, sector(1)).flush()         # back as it was
                   .write(11, sector(11)).flush()       # the slot's own content again
                   .write(1, sector(0xA1)).flush()
                   .save(tmp_path / "writes.log"))
    regions = [Region("boot", 0, 8 * SECTOR), Region("slot", 8 * SECTOR, 8 * SECTOR)]
    contents = Contents(log, base, regions)
    flushes = [s for s in crash_states(log) if s.kind == "flush"]
    groups = group_states(flushes, contents)
    assert [[s.durable for s in g.states] for g in groups] == [[2, 6, 8], [4, 10]]
    lost = [s for s in crash_states(log) if s.kind == "lost"]
    assert lost and all(contents.key(s) == contents.key(f) for s in lost for f in flushes
                        if f.durable == s.durable)


def test_write_overlay_holds_the_state_over_the_base(tmp_path, base):
    log = read_log(LogBuilder().write(1, sector(0xA1) + sector(0xA2)).write(3, sector(0xA3))
                   .write(9, sector(0xC9)).flush().save(tmp_path / "writes.log"))
    state = next(s for s in crash_states(log) if s.kind == "flush")
    overlay = write_overlay(log, state, base, tmp_path / "state.qcow2")
    raw = tmp_path / "state.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(raw)], check=True)
    data = raw.read_bytes()
    assert [data[n * SECTOR] for n in range(12)] == [0, 0xA1, 0xA2, 0xA3, 4, 5, 6, 7, 8, 0xC9,
                                                      10, 11]
    assert base.read_bytes()[SECTOR] == 1  # the base is untouched


def test_a_sample_of_groups_has_every_boot_region_content_first(tmp_path, base):
    builder = LogBuilder()
    for n in range(12):  # data-only changes, and three environments among them
        builder.write(9, sector(0x10 + n)).flush()
        if n in (3, 7, 10):
            builder.write(1, sector(0xA0 + n)).flush()
    log = read_log(builder.save(tmp_path / "writes.log"))
    contents = Contents(log, base, [Region("boot", 0, 8 * SECTOR),
                                    Region("data", 8 * SECTOR, 8 * SECTOR)])
    groups = group_states([s for s in crash_states(log) if s.kind == "flush"], contents)
    assert len(groups) == 15
    for seed in range(5):
        chosen = sample_groups(groups, 5, seed)
        assert len(chosen) == 5 and chosen == sorted(chosen, key=groups.index)
        assert len({g.key[0] for g in chosen}) == 4  # the base's and the three written
    assert sample_groups(groups, 5, 1) == sample_groups(groups, 5, 1)
    assert sample_groups(groups, None, 1) == groups


def test_a_recording_keeps_what_a_daemon_state_is_deployed(tmp_path):
    expect = Expectations(("release-1", "release-2"), {"/data/f": "ab"}, "/data/tern/u.toml",
                          deployed="release-2")
    Recording(tmp_path, tmp_path / "base.raw", tmp_path / "writes.log", 7, expect, "daemon",
              {"id": "r1"}).save()
    assert Recording.load(tmp_path).expect == expect
    document = json.loads((tmp_path / "recording.json").read_text())
    del document["deployed"]  # recorded before it was kept: a standalone fresh update
    (tmp_path / "recording.json").write_text(json.dumps(document))
    assert Recording.load(tmp_path).expect.deployed == ""
