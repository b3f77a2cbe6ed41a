"""The read-back: a slot whose medium does not hold what the verified stream gave never
becomes bootable (the CRC-32 of the stream against the slot read past the page cache)."""
import os

import pytest

from testkit.host_device import FACTORY_A
from updater.install import rootfs

PAYLOAD = bytes(range(256)) * (9 << 12)  # 9 MiB: several writes


def flip_one_byte(fd: int, data: memoryview, offset: int, crash_at) -> int:
    """The driver or the flash damages a byte of the second write."""
    damaged = bytearray(data)
    if offset == rootfs.WRITE_SIZE:
        damaged[12345] ^= 0x01
    return os.write(fd, damaged)


def lose_a_write(fd: int, data: memoryview, offset: int, crash_at) -> int:
    """The second write never reaches the medium, which keeps what it had there."""
    if offset == rootfs.WRITE_SIZE:
        os.lseek(fd, len(data), os.SEEK_CUR)
        return len(data)
    return os.write(fd, data)


@pytest.mark.parametrize("medium", [flip_one_byte, lose_a_write])
def test_a_slot_that_reads_back_wrong_never_becomes_bootable(device, make_artifact, capfd,
                                                              monkeypatch, medium):
    device.slot("b").write_bytes(b"\xee" * len(PAYLOAD))  # the previous image's bytes
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    monkeypatch.setattr(rootfs, "_write_all", medium)
    before = device.env_bytes()
    assert device.run("install", str(artifact)) == 1
    assert "reads back CRC-32" in capfd.readouterr().err
    assert device.env_bytes() == before
    assert device.power_on() == "a"
    assert device.slot("a").read_bytes() == FACTORY_A
    assert device.last_result()["status"] == "failure"


def test_a_slot_written_right_reads_back_and_boots(device, make_artifact):
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    assert device.run("install", str(artifact)) == 0
    assert device.slot("b").read_bytes() == PAYLOAD
    assert device.power_on() == "b"
