"""A file stands in for the bootloader: for tests and simulated devices.

The file holds the same variables as U-Boot's environment (`name=value` lines).
`power_on` does what the boot script and the kernel do, so a test can "reboot" a
simulated device (with this backend or with U-Boot's environment in plain files).
"""
import os
import uuid
from pathlib import Path

from .base import BACKENDS, MenderVariables, make_bootloader, other_slot


class FileBootloader(MenderVariables):
    def __init__(self, path: str | Path, parts: dict[str, str]):
        super().__init__(parts)
        self.path = Path(path)
        if not self.path.exists():  # a factory-fresh device boots slot a
            self.rollback("a")
            self.write({"bootlimit": "1"})

    def read(self) -> dict[str, str]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def write(self, changes: dict[str, str]) -> None:
        variables = {**self.read(), **changes}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as file:
            file.write("".join(f"{k}={v}\n" for k, v in variables.items()))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)


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


def power_on(config) -> str:
    """Boot a simulated device: the boot script, then what the kernel shows — the booted
    slot's root= in `cmdline_file`, a new boot id in `boot_id_file`."""
    slot = boot_script(make_bootloader(config))
    device = config.rootfs_a if slot == "a" else config.rootfs_b
    Path(config.cmdline_file).write_text(f"console=ttyAMA0 root={device} rootwait\n")
    Path(config.boot_id_file).write_text(f"{uuid.uuid4()}\n")
    return slot


def _from_config(config, parts: dict[str, str]) -> FileBootloader:
    return FileBootloader(config.bootloader_env, parts)


BACKENDS["file"] = _from_config
