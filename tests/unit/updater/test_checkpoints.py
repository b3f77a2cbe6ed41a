"""The download checkpoints of a rootfs write (install/rootfs.py): each holds the CRC-32 of
the image before it, taken in the pass that computes the stream's CRC-32 for the read-back,
so a full install hashes every byte once with SHA-256 (the payload file's, against the
signed manifest) and once with CRC-32 as it streams (the read-back's CRC of the slot
besides); after a power cut the slot prefix is checked against them in one pass that also
feeds the whole image's sha256."""
import hashlib
import os
import zlib

import pytest

from artifact import ArtifactReader
from updater.install import rootfs
from updater.update import Checkpoint, Progress, Update

KiB, MiB = 1 << 10, 1 << 20
PAYLOAD = os.urandom(6 * MiB + 123)


class Counted:
    """The bytes fed to hashlib.sha256 objects and to zlib.crc32 while it is active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.sha256 = 0
        self.crc32 = 0
        sha256, crc32 = hashlib.sha256, zlib.crc32
        counted = self

        class Sha256:
            def __init__(self, data=b"", inner=None):
                self.inner = inner or sha256()
                self.update(data)

            def update(self, data) -> None:
                counted.sha256 += len(data)
                self.inner.update(data)

            def copy(self) -> "Sha256":
                return Sha256(inner=self.inner.copy())

            def hexdigest(self) -> str:
                return self.inner.hexdigest()

        def counting_crc32(data, value=0) -> int:
            counted.crc32 += len(data)
            return crc32(data, value)

        monkeypatch.setattr(hashlib, "sha256", Sha256)
        monkeypatch.setattr(zlib, "crc32", counting_crc32)


def install(artifact, slot, interval: int = MiB) -> Progress:
    """A full install with checkpoints, as RootfsInstaller.write_payload makes it."""
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        for payload in reader.payloads():
            for file in payload.files():
                progress = Progress(artifact.stat().st_size, None, payload.header_offset,
                                    payload.member, file.name, file.size, file.offset)
                recorder = rootfs.Recorder(progress, interval, file.offset,
                                           payload.restart_point, lambda: None)
                assert rootfs.write_image(file, str(slot), recorder=recorder) == len(PAYLOAD)
    assert slot.read_bytes() == PAYLOAD
    return progress


class Chunks:
    """The rest of a payload file after a checkpoint, as ResumedFile yields it."""

    def __init__(self, data: bytes):
        self.name, self.size, self.data = "rootfs.ext4", len(data), data

    def __iter__(self):
        for at in range(0, self.size, MiB):
            yield self.data[at:at + MiB]


@pytest.fixture
def artifact(make_artifact):
    return make_artifact({"rootfs.ext4": PAYLOAD})  # gzip: a member per MiB


@pytest.fixture
def slot(tmp_path):
    path = tmp_path / "slot"
    path.write_bytes(b"")
    return path


def test_a_checkpoint_holds_the_crc32_of_the_image_before_it(artifact, slot):
    checkpoints = install(artifact, slot).checkpoints
    # at the gzip members' starts (one per MiB of the data archive), each a MiB past the last
    assert [c.data_offset for c in checkpoints] == [n * MiB for n in range(2, 7)]
    for checkpoint in checkpoints:
        assert checkpoint.crc32 == zlib.crc32(PAYLOAD[:checkpoint.image_offset])


def test_a_full_install_hashes_the_payload_once_with_sha256_and_crc32(artifact, slot):
    with pytest.MonkeyPatch.context() as patch:
        counted = Counted(patch)
        install(artifact, slot)
    # the payload file's sha256 (and the head's few KiB: version, manifest, header)
    assert len(PAYLOAD) <= counted.sha256 <= len(PAYLOAD) + 64 * KiB
    # the stream's CRC-32 (the checkpoints' too), then the read-back's
    assert counted.crc32 == 2 * len(PAYLOAD)


def test_the_prefix_check_hashes_the_kept_bytes_once(artifact, slot):
    checkpoints = install(artifact, slot).checkpoints
    with pytest.MonkeyPatch.context() as patch:
        counted = Counted(patch)
        kept, digest = rootfs._verified_prefix(str(slot), checkpoints)
    assert kept == checkpoints[-1]
    assert digest.hexdigest() == hashlib.sha256(PAYLOAD[:kept.image_offset]).hexdigest()
    assert counted.sha256 == counted.crc32 == kept.image_offset


def test_a_byte_flipped_in_a_segment_keeps_the_checkpoint_before_it(artifact, slot):
    checkpoints = install(artifact, slot).checkpoints
    with open(slot, "r+b") as medium:
        medium.seek(checkpoints[2].image_offset - 100)  # inside the third segment
        flipped = medium.read(1)[0] ^ 0x01
        medium.seek(-1, os.SEEK_CUR)
        medium.write(bytes([flipped]))

    kept, digest = rootfs._verified_prefix(str(slot), checkpoints)
    assert kept == checkpoints[1]
    assert digest.hexdigest() == hashlib.sha256(PAYLOAD[:kept.image_offset]).hexdigest()


def test_a_resumed_write_goes_on_with_the_kept_prefix_crc32(artifact, slot):
    """The read-back of a resumed write and its checkpoints carry the CRC-32 on from the
    kept prefix's, so a second cut resumes from a checkpoint the resumed write recorded."""
    progress = install(artifact, slot)
    kept = progress.checkpoints[1]
    del progress.checkpoints[2:]
    with open(slot, "r+b") as medium:
        medium.truncate(kept.image_offset)  # the rest never reached the medium

    def restart_point(offset: int) -> tuple[int, int]:  # as an uncompressed payload's
        return offset, offset

    recorder = rootfs.Recorder(progress, MiB, progress.file_offset, restart_point,
                               lambda: None)
    rootfs.write_image(Chunks(PAYLOAD[kept.image_offset:]), str(slot), start=kept.image_offset,
                       crc=kept.crc32, recorder=recorder)
    assert slot.read_bytes() == PAYLOAD
    resumed = progress.checkpoints[2:]
    assert resumed and all(c.crc32 == zlib.crc32(PAYLOAD[:c.image_offset]) for c in resumed)


OLD_CHECKPOINT = {"image_offset": MiB, "artifact_offset": 4096, "data_offset": MiB + 512,
                  "sha256": "ab" * 32}
OLD_PROGRESS = {"artifact_size": 9 * MiB, "etag": None, "head_size": 2048,
                "member": "data/0000.tar.gz", "file": "rootfs.ext4", "file_size": 8 * MiB,
                "file_offset": 512, "checkpoints": [OLD_CHECKPOINT]}


def test_an_older_agents_checkpoint_loads_without_a_crc32():
    """The previous agent kept a segment's sha256: it loads, as a checkpoint it cannot
    check (resume_payload then starts afresh: test_resume.py)."""
    update = Update.from_json({"source": "x.mender", "progress": OLD_PROGRESS})
    assert update.progress.checkpoints == [Checkpoint(MiB, 4096, MiB + 512, None)]
