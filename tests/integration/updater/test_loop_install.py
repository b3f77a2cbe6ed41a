"""Installs into loop devices, with artifacts made by Debian's mender-artifact and by
tern-artifact, through the file backend and through U-Boot's environment as
libubootenv's tools see it."""
import os
import subprocess

import pytest

from testkit.host_device import new_device
from updater.bootloader import make_bootloader

SLOT_SIZE = 8 << 20


@pytest.fixture
def loop_device(tmp_path, loop_devices):
    """A simulated device whose slots are loop devices; returns (device, image bytes)."""
    def make(bootloader="file"):
        device = new_device(tmp_path / "device", bootloader)
        for slot in ("a", "b"):
            backing = device.slot(slot)
            with open(backing, "r+b") as file:
                file.truncate(SLOT_SIZE)
            device.settings[f"rootfs_{slot}"] = loop_devices(backing)
        bootloader_ = make_bootloader(device.config)  # loop numbers as partitions
        bootloader_.rollback("a")
        device.power_on()
        return device
    return make


def image(size: int = 3_000_001) -> bytes:
    return os.urandom(size // 2) + b"compressible" * (size // 24) + b"!" * (size % 12)


def read_slot(device, slot: str, size: int) -> bytes:
    with open(device.settings[f"rootfs_{slot}"], "rb") as file:
        return file.read(size)


def mender_artifact(tmp_path, payload: bytes, *args) -> str:
    (tmp_path / "rootfs.ext4").write_bytes(payload)
    out = tmp_path / "mender.mender"
    subprocess.run(["mender-artifact", "write", "rootfs-image", "-f", tmp_path / "rootfs.ext4",
                    "-n", "release-2", "-t", "qemu-arm64", *args, "-o", out], check=True,
                   capture_output=True)
    return str(out)


@pytest.mark.parametrize("compression", ["gzip", "none", "lzma"])
def test_mender_artifact_rootfs_installs_byte_identically(tmp_path, loop_device, compression):
    device = loop_device()
    payload = image()
    artifact = mender_artifact(tmp_path, payload, "--compression", compression)
    assert device.run("install", artifact) == 0
    assert read_slot(device, "b", len(payload)) == payload
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    assert device.provides()["rootfs-image.version"] == "release-2"


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_mender_artifact_signed_rootfs(tmp_path, loop_device, keys, kind):
    device = loop_device()
    payload = image(1 << 20)
    artifact = mender_artifact(tmp_path, payload, "-k", keys[kind].private_path)
    device.settings["verify_keys"] = [str(keys[kind].public_path)]
    assert device.run("install", artifact) == 0
    assert read_slot(device, "b", len(payload)) == payload


def test_tern_artifact_rootfs_installs_byte_identically(loop_device, make_artifact):
    device = loop_device()
    payload = image(5 << 20)
    assert device.run("install", str(make_artifact({"rootfs.ext4": payload}))) == 0
    assert read_slot(device, "b", len(payload)) == payload


def test_payload_larger_than_the_slot_is_rejected(loop_device, make_artifact):
    device = loop_device()
    before = device.env_bytes()
    assert device.run("install", str(make_artifact({"rootfs.ext4": image(SLOT_SIZE + 1)}))) == 1
    assert "holds 8388608" in device.last_result()["error"]
    assert device.env_bytes() == before


def test_uboot_environment_through_libubootenv(tmp_path, loop_device, make_artifact):
    device = loop_device("uboot")
    config = device.settings["fw_env_config"]
    (tmp_path / "defenv").write_text("bootlimit=1\n")

    def fw_printenv():
        out = subprocess.run(["fw_printenv", "-c", config, "-f", tmp_path / "defenv"],
                             check=True, capture_output=True, text=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    part_a = device.settings["rootfs_a"].removeprefix("/dev/loop")
    part_b = device.settings["rootfs_b"].removeprefix("/dev/loop")
    assert fw_printenv()["mender_boot_part"] == part_a
    payload = image(1 << 20)
    assert device.run("install", str(make_artifact({"rootfs.ext4": payload}))) == 0
    env = fw_printenv()
    assert (env["mender_boot_part"], env["upgrade_available"], env["bootcount"]) == \
        (part_b, "1", "0")
    assert env["mender_boot_part_hex"] == f"{int(part_b):x}"
    assert device.power_on() == "b"
    assert fw_printenv()["bootcount"] == "1"
    assert device.run("resume") == 0
    assert fw_printenv()["upgrade_available"] == "0"
    assert read_slot(device, "b", len(payload)) == payload
