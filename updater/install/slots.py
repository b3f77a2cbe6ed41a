"""Which slot is running, which one may be written.

The running slot comes from `root=` on the kernel command line; the device that is
mounted on `/` must not be the other slot, and the bootloader must agree (outside a
trial boot, it boots the running slot). Anything else is an inconsistent device
that no install should touch.
"""
import os
import stat
from pathlib import Path

from ..bootloader.base import Bootloader, other_slot
from ..config import Config


class SlotError(Exception):
    """The running slot cannot be told, or the boot environment disagrees with it."""


def slot_devices(config: Config) -> dict[str, str]:
    return {"a": config.rootfs_a, "b": config.rootfs_b}


def running_slot(config: Config) -> str:
    devices = slot_devices(config)
    root = _root_from_cmdline(Path(config.cmdline_file).read_text())
    if root is None or root.startswith(("PARTUUID=", "UUID=", "LABEL=")):
        return _mounted_slot(devices, config.cmdline_file)
    matches = [slot for slot, device in devices.items() if _same_device(root, device)]
    if not matches:
        raise SlotError(f"root={root} is neither slot (a: {devices['a']}, b: {devices['b']})")
    slot = matches[0]
    mounted = os.stat("/").st_dev
    if _device_number(devices[other_slot(slot)]) == mounted:
        raise SlotError(f"root={root} on the command line, but / is mounted from "
                        f"{devices[other_slot(slot)]}")
    return slot


def _mounted_slot(devices: dict[str, str], cmdline_file: str) -> str:
    """Without root= (a root=PARTUUID=... is not resolved): the device mounted on /."""
    mounted = os.stat("/").st_dev
    for slot, device in devices.items():
        if _device_number(device) == mounted:
            return slot
    raise SlotError(f"no root= on the kernel command line ({cmdline_file}), and / is "
                    f"mounted from neither slot (a: {devices['a']}, b: {devices['b']})")


def inactive_slot(config: Config, bootloader: Bootloader) -> tuple[str, str]:
    """(running, inactive) after cross-checking the boot environment."""
    running = running_slot(config)
    if bootloader.trial_pending():
        raise SlotError("a trial boot is pending in the boot environment; "
                        "commit or roll back first")
    booting = bootloader.boot_slot()
    if booting != running:
        raise SlotError(f"running slot {running} but the boot environment boots {booting}: "
                        "no match between boot and root partitions")
    return running, other_slot(running)


def _root_from_cmdline(cmdline: str) -> str | None:
    for word in cmdline.split():
        if word.startswith("root="):
            return word[5:]
    return None


def _same_device(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    number = _device_number(a)
    return number is not None and number == _device_number(b)


def _device_number(path: str) -> int | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_rdev if stat.S_ISBLK(info.st_mode) else None
