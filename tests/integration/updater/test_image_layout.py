"""Tern on the emulated device's real disk layout (build/images from `make image`): the
environment at the raw offsets of the image's fw_env.config, read and written by Tern and
by libubootenv alike, and the signed release artifact installed into slot B."""
import json
import subprocess
from pathlib import Path

import pytest

from testkit.host_device import Device, new_device
from updater.bootloader.uboot import UBootEnv, read_fw_env_config

IMAGES = Path(__file__).parents[3] / "build/images"


@pytest.fixture
def image_device(tmp_path, loop_devices):
    """A private copy of disk.img; slots A and B as loop devices at the partitions' offsets,
    named vda2/vda3 (the partition numbers the boot script uses)."""
    layout = json.loads((IMAGES / "layout.json").read_text())
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", IMAGES / layout["disk"], disk], check=True)
    names = {"rootA": "vda2", "rootB": "vda3"}
    for partition, name in names.items():
        place = layout["partitions"][partition]
        loop = subprocess.run(["losetup", "-f", "--show", "-o", str(place["offset"]),
                               "--sizelimit", str(place["size"]), str(disk)], check=True,
                              capture_output=True, text=True).stdout.strip()
        loop_devices.attached.append(loop)  # detached by the fixture
        (tmp_path / name).symlink_to(loop)
    config = tmp_path / "fw_env.config"
    config.write_text("".join(f"{disk} {offset:#x} {layout['env']['size']:#x}\n"
                              for offset in layout["env"]["offsets"]))
    (tmp_path / "defenv").write_text("bootlimit=1\n")
    device = Device(tmp_path, {
        **new_device(tmp_path / "sim").settings,
        "bootloader": "uboot", "fw_env_config": str(config),
        "rootfs_a": str(tmp_path / "vda2"), "rootfs_b": str(tmp_path / "vda3"),
        "device_type": layout["device_type"],
        "verify_keys": [str(IMAGES / layout["keys"]["artifact_public"])]})
    (tmp_path / "sim/cmdline").write_text(f"console=ttyAMA0 root={tmp_path / 'vda2'}\n")
    return device, layout


def fw_printenv(device) -> dict[str, str]:
    out = subprocess.run(["fw_printenv", "-c", device.settings["fw_env_config"], "-f",
                          device.root / "defenv"], check=True, capture_output=True,
                         text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_image_environment_reads_the_same_in_tern_and_libubootenv(image_device):
    device, layout = image_device
    env = UBootEnv(read_fw_env_config(device.settings["fw_env_config"])).read()
    assert env == fw_printenv(device) == layout["env"]["initial"]


def test_signed_release_installs_into_slot_b_of_the_image(image_device):
    device, layout = image_device
    artifact = IMAGES / layout["releases"]["release-2"]["artifact"]
    assert device.run("install", str(artifact)) == 0
    env = fw_printenv(device)
    assert (env["mender_boot_part"], env["mender_boot_part_hex"], env["upgrade_available"],
            env["bootcount"]) == ("3", "3", "1", "0")
    rootfs = IMAGES / layout["releases"]["release-2"]["rootfs"]
    with open(device.settings["rootfs_b"], "rb") as slot, open(rootfs, "rb") as expected:
        while chunk := expected.read(4 << 20):
            assert slot.read(len(chunk)) == chunk
