"""A rootfs download cut by power loss goes on after power-on from its last checkpoint:
the slot prefix written, fsynced and recorded is kept (checked against its CRC-32), the
rest is read from the artifact where a gzip member starts, and the whole payload is still
checked against the signed manifest. What cannot resume starts again from the first byte;
a device that keeps losing power is stopped by the store-count cap."""
import hashlib
import json
import os

import pytest

from artifact import compression
from testkit.host_device import FACTORY_A, new_device
from updater.agent.states import State
from updater.failpoints import CRASH_EXIT

S = State
MiB = 1 << 20
PAYLOAD = os.urandom(10 * MiB) + b"tail"
CUT = f"payload:{9 * MiB}"  # at the end of the ninth 1 MiB write, after seven checkpoints


@pytest.fixture
def device(tmp_path):
    return new_device(tmp_path / "device", download_progress_interval=MiB)


def messages(device) -> list[str]:
    update = device.stored()["update"]
    log = update.log if update else device.last_result()["log"]
    return [line["message"] for line in log]


def cut_install(device, artifact) -> list:
    assert device.run("install", str(artifact), failpoints=CUT) == CRASH_EXIT
    stored = device.stored()
    assert stored["state"] is S.DOWNLOAD
    device.power_on()
    return stored["update"].progress.checkpoints


def test_a_cut_download_resumes_from_its_last_checkpoint(device, make_artifact):
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    checkpoints = cut_install(device, artifact)
    # one per 1 MiB write, at the gzip member that starts there (none before the first MiB)
    assert [c.image_offset // MiB for c in checkpoints] == list(range(1, 8))

    assert device.run("resume") == 0
    assert device.stored()["state"] is S.ARTIFACT_REBOOT
    assert device.stored()["update"].progress is None  # done with
    assert f"resuming the download at byte {checkpoints[-1].artifact_offset}: slot b keeps " \
           f"{checkpoints[-1].image_offset} of {len(PAYLOAD)} bytes (checked against the " \
           "recorded CRC-32)" in messages(device)
    assert device.slot("b").read_bytes() == PAYLOAD
    device.power_on()
    assert device.run("resume") == 0
    assert device.last_result()["status"] == "success"


def test_a_damaged_segment_resumes_from_the_checkpoint_before_it(device, make_artifact):
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    checkpoints = cut_install(device, artifact)
    with open(device.slot("b"), "r+b") as slot:
        slot.seek(checkpoints[0].image_offset + 10)
        slot.write(b"X")

    assert device.run("resume") == 0
    assert any(f"resuming the download at byte {checkpoints[0].artifact_offset}:" in line
               for line in messages(device))
    assert device.slot("b").read_bytes() == PAYLOAD


def test_a_second_cut_resumes_from_a_checkpoint_the_resumed_write_recorded(device,
                                                                          make_artifact):
    """The resumed write's checkpoints carry the CRC-32 on from the kept prefix's."""
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    first = cut_install(device, artifact)[-1]
    assert device.run("resume", failpoints=f"payload:{10 * MiB}") == CRASH_EXIT
    second = device.stored()["update"].progress.checkpoints[-1]
    assert second.image_offset > first.image_offset
    device.power_on()

    assert device.run("resume") == 0
    assert any(f"resuming the download at byte {second.artifact_offset}:" in line
               for line in messages(device))
    assert device.slot("b").read_bytes() == PAYLOAD


def test_an_older_agents_sha256_checkpoints_download_again(device, make_artifact):
    """A device updated to this agent in the middle of a download: the store's checkpoints
    hold a segment's sha256 each, which this agent does not check; the download starts
    afresh, with a line in the log, never a traceback."""
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    cut_install(device, artifact)
    store = device.config.data / "state.json"
    document = json.loads(store.read_text())
    end = 0
    for checkpoint in document["update"]["progress"]["checkpoints"]:  # as the older agent
        del checkpoint["crc32"]
        start, end = end, checkpoint["image_offset"]
        checkpoint["sha256"] = hashlib.sha256(PAYLOAD[start:end]).hexdigest()
    store.write_text(json.dumps(document))

    assert device.run("resume") == 0
    assert "cannot resume the download: the checkpoints were recorded by an older agent (a " \
           "sha256 each, no CRC-32); downloading again from the start" in messages(device)
    assert device.slot("b").read_bytes() == PAYLOAD
    device.power_on()
    assert device.run("resume") == 0
    assert device.last_result()["status"] == "success"


def test_a_damaged_first_segment_downloads_again(device, make_artifact):
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    cut_install(device, artifact)
    with open(device.slot("b"), "r+b") as slot:
        slot.write(b"X")

    assert device.run("resume") == 0
    assert "cannot resume the download: slot b no longer holds the bytes of the first " \
           "checkpoint; downloading again from the start" in messages(device)
    assert device.slot("b").read_bytes() == PAYLOAD


def test_a_changed_artifact_downloads_again(device, make_artifact):
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    cut_install(device, artifact)
    other = os.urandom(5 * MiB)
    artifact.write_bytes(make_artifact({"rootfs.ext4": other}).read_bytes())

    assert device.run("resume") == 0
    assert "cannot resume the download: the artifact changed since the download began; " \
           "downloading again from the start" in messages(device)
    assert device.slot("b").read_bytes() == other


def test_a_single_member_payload_downloads_again(device, make_artifact, monkeypatch):
    """As mender-artifact writes it: no point to resume from but the first byte."""
    monkeypatch.setattr(compression, "GZIP_MEMBER_SIZE", 1 << 30)
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    assert cut_install(device, artifact) == []

    assert device.run("resume") == 0
    assert any("cannot resume the download: no checkpoint was recorded before the cut" in line
               and "a payload of a single gzip member" in line for line in messages(device))
    assert device.slot("b").read_bytes() == PAYLOAD


def test_an_uncompressed_payload_resumes_too(device, make_artifact):
    artifact = make_artifact({"rootfs.ext4": PAYLOAD}, compression="none")
    checkpoints = cut_install(device, artifact)
    assert checkpoints[-1].image_offset == 8 * MiB - 1  # anywhere: the end of the last write

    assert device.run("resume") == 0
    assert any("resuming the download at byte" in line for line in messages(device))
    assert device.slot("b").read_bytes() == PAYLOAD


def test_a_payload_that_differs_from_the_manifest_fails_after_a_resume(device, make_artifact):
    """The kept prefix and the rest are checked as one payload against the manifest."""
    artifact = make_artifact({"rootfs.ext4": PAYLOAD}, compression="none")
    checkpoints = cut_install(device, artifact)
    data = bytearray(artifact.read_bytes())
    data[checkpoints[-1].artifact_offset + MiB] ^= 0xFF  # past the checkpoint
    artifact.write_bytes(data)

    assert device.run("resume") == 3  # the update failed and is over
    result = device.last_result()
    assert result["status"] == "failure" and "checksum" in result["error"].lower()
    assert device.slot("a").read_bytes() == FACTORY_A
    assert device.env()["upgrade_available"] == "0"


def test_a_device_that_keeps_losing_power_ends_in_failure(device, make_artifact):
    """The store-count cap: every power-on resumes the download and is cut again."""
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    code = device.run("install", str(artifact), failpoints=CUT)
    for _ in range(3 * device.config.max_store_count):
        if device.stored()["state"] is S.IDLE:
            break
        assert code == CRASH_EXIT or device.stored()["state"] is not S.DOWNLOAD
        device.power_on()
        code = device.run("resume", failpoints=CUT)
    assert device.stored()["state"] is S.IDLE
    result = device.last_result()
    assert result["status"] == "failure" and "loop broken" in result["error"]
    assert device.power_on() == "a"
