"""What a power-on does, for simulated devices and tests: `power_on` runs the boot
script's logic on the environment (with the file backend or with U-Boot's environment in
plain files), then shows the kernel's view, so a test can "reboot" a simulated device.
"""
import uuid
from pathlib import Path

from ..config import Config
from . import make_bootloader
from .base import MenderVariables, other_slot


def boot_script(bootloader: MenderVariables, bootlimit: int = 1) -> str:
    """What images/boot.cmd does at power-on; returns the slot that boots."""
    variables = bootloader.read()
    if variables.get("upgrade_available") == "1":
        bootcount = int(variables.get("bootcount", "0")) + 1
        if bootcount > int(variables.get("bootlimit", bootlimit)):
            bootloader.rollback(other_slot(bootloader.boot_slot()))
        else:
            bootloader.write({"bootcount": str(bootcount)})
    return bootloader.boot_slot()


def power_on(config: Config) -> str:
    """Boot a simulated device: the boot script, then what the kernel shows — the booted
    slot's root= in `cmdline_file`, a new boot id in `boot_id_file`."""
    slot = boot_script(make_bootloader(config))
    device = config.rootfs_a if slot == "a" else config.rootfs_b
    Path(config.cmdline_file).write_text(f"console=ttyAMA0 root={device} rootwait\n")
    Path(config.boot_id_file).write_text(f"{uuid.uuid4()}\n")
    return slot
