"""A simulated A/B device on the host: slot files, a bootloader file, a kernel command line,
for the updater's unit tests and the integration tests that run its daemon against a server.

`Device.run(...)` runs `tern-updater` in a forked child, so a fail point's `os._exit`
ends only that child — a power loss of the updater, not of the test.
`Device.power_on()` is what a reboot does: the boot script's bootcount logic, then
`root=` of the booted slot on the "kernel command line".
"""
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from updater import cli
from updater.agent.statestore import StateStore
from updater.bootloader import make_bootloader
from updater.bootloader.boot import power_on
from updater.config import Config

SLOT_SIZE = 1 << 20
FACTORY_A = b"factory slot A\n".ljust(4096, b".") * (SLOT_SIZE // 4096)


@dataclass
class Device:
    root: Path
    settings: dict

    @property
    def config(self) -> Config:
        return Config(**self.settings)

    @property
    def toml(self) -> Path:
        path = self.root / "tern.toml"
        path.write_text("".join(f"{key} = {json.dumps(value)}\n"
                                for key, value in self.settings.items()))
        return path

    def run(self, command: str, *args: str, failpoints: str = "") -> int:
        argv = ["--config", str(self.toml), "--failpoints", failpoints, command, *args]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 70
            try:
                code = cli.main(argv)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def power_on(self) -> str:
        return power_on(self.config)

    def slot(self, name: str) -> Path:
        return Path(self.settings["rootfs_a" if name == "a" else "rootfs_b"])

    def stored(self) -> dict:
        stored = StateStore(self.config.data / "state.json").load()
        return {"state": stored.state, "store_count": stored.store_count,
                "update": stored.update}

    def last_result(self) -> dict | None:
        path = self.config.data / "last-result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def env(self) -> dict[str, str]:
        return make_bootloader(self.config).read()

    def env_bytes(self) -> bytes:
        files = [Path(self.settings["bootloader_env"])] if self.settings["bootloader"] == "file" \
            else sorted(self.root.glob("uboot*.env"))
        return b"".join(f.read_bytes() for f in files)

    def provides(self) -> dict:
        path = self.config.data / "provides.json"
        return json.loads(path.read_text()) if path.exists() else {}


def new_device(root: Path, bootloader: str = "file", **settings) -> Device:
    root.mkdir(parents=True, exist_ok=True)
    slot_a, slot_b = root / "slot2.img", root / "slot3.img"
    slot_a.write_bytes(FACTORY_A)
    slot_b.write_bytes(b"\0" * SLOT_SIZE)
    base = {
        "data_dir": str(root / "data"),
        "bootloader": bootloader,
        "bootloader_env": str(root / "bootenv"),
        "fw_env_config": str(root / "fw_env.config"),
        "rootfs_a": str(slot_a),
        "rootfs_b": str(slot_b),
        "device_type": "qemu-arm64",
        "artifact_info": str(root / "artifact_info"),
        "cmdline_file": str(root / "cmdline"),
        "boot_id_file": str(root / "boot_id"),
        "reboot_command": "",
        "modules_dir": "/usr/share/mender/modules/v3",
        "scripts_dir": str(root / "scripts"),
        "health_dir": str(root / "health.d"),
        "watchdog_device": "",
        "max_store_count": 10,
        "state_script_retry_interval": 0.05,
    }
    (root / "artifact_info").write_text("artifact_name=factory\n")
    if bootloader == "uboot":
        for name in ("uboot.env", "uboot-redund.env"):
            (root / name).write_bytes(b"\0" * 0x4000)
        (root / "fw_env.config").write_text(f"{root}/uboot.env 0x0 0x4000\n"
                                            f"{root}/uboot-redund.env 0x0 0x4000\n")
    device = Device(root, {**base, **settings})
    bootloader_ = make_bootloader(device.config)
    bootloader_.rollback("a")
    bootloader_.write({"bootlimit": "1"})
    device.power_on()
    return device


def add_health_check(device: Device, name: str, script: str) -> Path:
    directory = Path(device.settings["health_dir"])
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def payload_bytes(name: str, size: int = 300_000) -> bytes:
    """A recognisable image that is not a multiple of any block size."""
    return (name.encode() + b"\n").ljust(1000, b"#") * (size // 1000) + b"tail"
