"""How often the adaptive install reads and hashes each slot's bytes (issue 19: the delta
install's wall time on the device, where SHA-256 under emulation costs seconds per pass):
each slot read once before the plan, the target once more when it is written (read back
for the whole image's sha256), the blocks it keeps never read in between;
a non-zero block hashed once unless the active slot's block at the same place has its
bytes; zero blocks compared, never hashed. And what a kept block still must prove."""
import contextlib
import hashlib
import io
import os
import random

import pytest

from artifact import ArtifactReader
from testkit.artifacts import write_indexed_artifact_file
from updater.install import adaptive
from updater.install.installer import Fallback

KiB, MiB = 1 << 10, 1 << 20
BLOCK = 4096


def images() -> tuple[bytes, bytes]:
    """A 4 MiB old image (random blocks, 1.5 MiB of zeros in two runs) and a new one with a
    few changed blocks in each half."""
    rng = random.Random(7)
    old = bytearray(rng.randbytes(4 * MiB))
    old[512 * KiB:1 * MiB] = bytes(512 * KiB)
    old[2 * MiB + 256 * KiB:3 * MiB + 256 * KiB] = bytes(MiB)
    new = bytearray(old)
    for block in (3, 40, 300, 700, 900):
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    return bytes(old), bytes(new)


OLD, NEW = images()
NON_ZERO = sum(BLOCK for at in range(0, len(OLD), BLOCK) if OLD[at:at + BLOCK] != bytes(BLOCK))


class FileRanges:
    """The artifact file by ranges (adaptive.Ranges)."""

    def __init__(self, path):
        self.path = path
        self.size = path.stat().st_size
        self.fetched = 0

    @contextlib.contextmanager
    def open(self, start: int, end: int):
        self.fetched += end - start
        with open(self.path, "rb") as stream:
            stream.seek(start)
            yield io.BytesIO(stream.read(end - start))


class Counted:
    """The bytes hashed with sha256 and read (os.pread) from each file, while it is active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.hashed = 0
        self.read: dict[str, int] = {}
        sha256, pread = hashlib.sha256, os.pread
        counted = self

        class Sha256:
            def __init__(self, data=b""):
                self.inner = sha256()
                self.update(data)

            def update(self, data) -> None:
                counted.hashed += len(data)
                self.inner.update(data)

            def digest(self) -> bytes:
                return self.inner.digest()

            def hexdigest(self) -> str:
                return self.inner.hexdigest()

        def counting_pread(fd: int, length: int, offset: int) -> bytes:
            data = pread(fd, length, offset)
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            self.read[name] = self.read.get(name, 0) + len(data)
            return data

        monkeypatch.setattr(hashlib, "sha256", Sha256)
        monkeypatch.setattr(os, "pread", counting_pread)


@pytest.fixture
def artifact(tmp_path):
    return write_indexed_artifact_file(tmp_path / "new.mender", NEW, name="new")


def install(tmp_path, artifact, target: bytes, active: bytes) -> int:
    (tmp_path / "target").write_bytes(target)
    (tmp_path / "active").write_bytes(active)
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        return adaptive.install(reader, FileRanges(artifact), target=str(tmp_path / "target"),
                                active=str(tmp_path / "active"), max_share=0.8,
                                sync_every=16 * MiB, log=lambda message: None)


def counted_install(tmp_path, artifact, target: bytes, active: bytes) -> Counted:
    with pytest.MonkeyPatch.context() as patch:
        counted = Counted(patch)
        size = install(tmp_path, artifact, target, active)
    assert (tmp_path / "target").read_bytes() == NEW
    assert size == len(NEW)
    return counted


def test_an_unchanged_image_hashes_its_non_zero_blocks_once_and_the_image_once(
        tmp_path, artifact):
    counted = counted_install(tmp_path, artifact, NEW, NEW)
    # the active slot's non-zero blocks (the target's are the same bytes: compared), then the
    # whole image's sha256; the index's own sha256 besides (a few KiB)
    assert NON_ZERO + len(NEW) < counted.hashed <= NON_ZERO + len(NEW) + 64 * KiB
    assert counted.read == {"target": 2 * len(NEW), "active": len(NEW)}


def test_a_half_written_target_hashes_only_its_blocks_the_active_slot_lacks(
        tmp_path, artifact):
    half = len(NEW) // 2
    counted = counted_install(tmp_path, artifact, NEW[:half] + OLD[half:], OLD)
    # the first half's three changed blocks (in place: hashed), the second half's two fetched
    # (their 64 KiB chunks hashed block by block), nothing copied
    extra = 3 * BLOCK + 2 * 64 * KiB
    assert counted.hashed <= NON_ZERO + len(NEW) + extra + 64 * KiB
    # the survey, then the read-back (the kept blocks are not read in the write pass)
    assert counted.read == {"target": 2 * len(NEW), "active": len(NEW)}


def test_a_target_holding_an_older_release_is_hashed_only_in_the_chunks_the_active_slot_lacks(
        tmp_path, artifact):
    rng = random.Random(8)
    older = bytearray(OLD)
    differing = range(0, len(OLD) // BLOCK, 3)  # a third of the blocks differ from OLD
    for block in differing:
        older[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    counted = counted_install(tmp_path, artifact, bytes(older), OLD)
    # the active slot's blocks, the blocks copied from it (checked as they are copied), the
    # five fetched chunks, the image; the target's differing blocks only in the five chunks
    # that the active slot does not hold in place (there the target could hold the chunk)
    copied = sum(BLOCK for block in differing
                 if OLD[block * BLOCK:(block + 1) * BLOCK] != bytes(BLOCK))
    lacking = {block // 16 for block in (3, 40, 300, 700, 900)}
    in_place = sum(BLOCK for block in differing if block // 16 in lacking)
    assert in_place == 27 * BLOCK
    assert counted.hashed <= NON_ZERO + copied + in_place + 5 * 64 * KiB + len(NEW) + 64 * KiB


def test_a_kept_block_changed_after_the_survey_fails_the_whole_image_check(
        tmp_path, artifact, monkeypatch):
    survey = adaptive.survey_slots

    def survey_then_damage(index, target, active):
        found = survey(index, target, active)
        with open(target, "r+b") as slot:
            slot.seek(2 * MiB + 7)
            slot.write(b"\xff")
        return found

    monkeypatch.setattr(adaptive, "survey_slots", survey_then_damage)
    with pytest.raises(Fallback, match="data/0000/rootfs.ext4 as read back from .*target: "
                                       "invalid checksum"):
        install(tmp_path, artifact, NEW, NEW)
