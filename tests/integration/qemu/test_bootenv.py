"""The redundant boot environment survives a damaged copy: corrupted from the host.

Both copies start out saying "B is committed" (written by the host's own
libubootenv); then one copy is damaged the way a power cut would damage it.
"""
import subprocess
from pathlib import Path

import pytest

from qemu.guest import fw_env

pytestmark = pytest.mark.qemu

COMMITTED_B = {"mender_boot_part": 3, "mender_boot_part_hex": 3, "upgrade_available": 0,
               "bootcount": 0, "bootlimit": 1}
TRIAL_A = {**COMMITTED_B, "mender_boot_part": 2, "mender_boot_part_hex": 2,
           "upgrade_available": 1}


class HostEnv:
    """The two environment copies inside a raw disk image, seen from the host."""

    def __init__(self, disk: Path, layout: dict, workdir: Path):
        self.disk = disk
        self.offsets = layout["env"]["offsets"]
        self.size = layout["env"]["size"]
        self.workdir = workdir
        self.config = workdir / "fw_env.config"
        self.config.write_text("".join(f"{disk} {offset:#x} {self.size:#x}\n"
                                       for offset in self.offsets))

    def set(self, variables: dict) -> None:
        """One write with the host's fw_setenv (it goes to the older copy)."""
        script = self.workdir / "env.txt"
        script.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
        subprocess.run(["fw_setenv", "-c", self.config, "-s", script], check=True)

    def blob(self, variables: dict, flag: int) -> bytes:
        """A valid copy holding `variables`, made by U-Boot's mkenvimage."""
        text = "".join(f"{k}={v}\n" for k, v in variables.items()).encode()
        out = self.workdir / "env.bin"
        subprocess.run(["mkenvimage", "-r", "-s", hex(self.size), "-o", out, "-"], input=text,
                       check=True)
        blob = bytearray(out.read_bytes())
        blob[4] = flag
        return bytes(blob)

    def read(self, copy: int) -> bytes:
        with open(self.disk, "rb") as f:
            f.seek(self.offsets[copy - 1])
            return f.read(self.size)

    def write(self, copy: int, data: bytes, at: int = 0) -> None:
        with open(self.disk, "r+b") as f:
            f.seek(self.offsets[copy - 1] + at)
            f.write(data)


@pytest.fixture
def host_env(base_image, tmp_path) -> HostEnv:
    """A private raw copy of the disk that host tools can edit; B committed in both copies."""
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", base_image.disk, disk], check=True)
    env = HostEnv(disk, base_image.layout, tmp_path)
    env.set(COMMITTED_B)
    env.set(COMMITTED_B)
    assert env.read(1)[5:] == env.read(2)[5:]
    return env


def torn_write(env: HostEnv, copy: int) -> None:
    """A new environment (A on trial, 6 KiB of data) whose write stopped after 4 KiB."""
    new = env.blob({**TRIAL_A, "tern_note": "x" * 6000}, env.read(copy)[4] + 2)
    env.write(copy, new[:4096])


def bad_crc(env: HostEnv, copy: int) -> None:
    env.write(copy, bytes([env.read(copy)[0] ^ 0xFF]))


def stale_flag(env: HostEnv, copy: int) -> None:
    """The flag byte of this copy equals the other copy's: neither looks newer."""
    env.write(copy, bytes([env.read(3 - copy)[4]]), at=4)


def boot(make_device, env: HostEnv):
    device = make_device(disk=env.disk)
    device.transition("shell")
    return device, device.log_path.read_text()


@pytest.mark.parametrize("copy", [1, 2])
@pytest.mark.parametrize("damage", [torn_write, bad_crc])
def test_committed_slot_boots_when_one_copy_is_damaged(make_device, host_env, damage, copy):
    damage(host_env, copy)
    device, log = boot(make_device, host_env)
    other = 3 - copy
    assert f"copy{copy} valid=0" in log
    assert f"using {other}" in log
    assert device.slot == "B"
    assert fw_env(device)["mender_boot_part"] == "3"  # libubootenv picks the same copy


@pytest.mark.parametrize("copy", [1, 2])
def test_committed_slot_boots_with_a_stale_flag(make_device, host_env, copy):
    stale_flag(host_env, copy)
    device, log = boot(make_device, host_env)
    assert "copy1 valid=1" in log and "copy2 valid=1" in log
    assert device.slot == "B"
    assert fw_env(device)["mender_boot_part"] == "3"


def test_flag_wraps_from_255_to_0(make_device, host_env):
    host_env.write(1, host_env.blob({**COMMITTED_B, "mender_boot_part": 2,
                                     "mender_boot_part_hex": 2}, 255))
    host_env.write(2, host_env.blob(COMMITTED_B, 0))
    device, log = boot(make_device, host_env)
    assert "using 2" in log
    assert device.slot == "B"
    assert fw_env(device)["mender_boot_part"] == "3"


def test_no_valid_copy_falls_back_to_a(make_device, host_env):
    bad_crc(host_env, 1)
    bad_crc(host_env, 2)
    device, log = boot(make_device, host_env)
    assert "tern: no valid environment copy, using defaults" in log
    assert device.slot == "A"
