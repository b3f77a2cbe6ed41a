"""A simulated A/B device on the host: slot files, a bootloader file, a kernel command line.

`Device.run(...)` runs `tern-updater` in a forked child, so a fail point's `os._exit`
ends only that child — a power loss of the updater, not of the test.
`Device.power_on()` is what a reboot does: the boot script's bootcount logic, then
`root=` of the booted slot on the "kernel command line".
"""
import io
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from artifact.header import ArtifactHeader
from artifact.payloads import PayloadOptions, Software, module_image, rootfs_image
from artifact.writer import write_artifact
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


@pytest.fixture
def device(tmp_path) -> Device:
    return new_device(tmp_path / "device")


def add_health_check(device: Device, name: str, script: str) -> Path:
    directory = Path(device.settings["health_dir"])
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def make_artifact(tmp_path):
    """Write an artifact file with the library; one file makes a rootfs-image unless
    module_type is given. Returns its path."""
    counter = iter(range(1_000_000))

    def make(files=None, *, name="release-2", device_types=("qemu-arm64",), key=None,
             module_type=None, scripts=None, depends=None, artifact_depends=None,
             compression="gzip") -> Path:
        number = next(counter)
        directory = tmp_path / f"artifact-input{number}"
        directory.mkdir()
        files = {"rootfs.ext4": payload_bytes(name)} if files is None else files
        paths = []
        for file_name, content in files.items():
            (directory / file_name).write_bytes(content)
            paths.append(directory / file_name)
        options = PayloadOptions(depends=dict(depends or {}))
        if module_type:
            source = module_image(module_type, paths, Software(name=module_type, version=name),
                                  options)
        else:
            source = rootfs_image(paths[0], Software(version=name), options)
        header = ArtifactHeader(name=name, device_types=list(device_types), payloads=[],
                                depends=dict(artifact_depends or {}), scripts=dict(scripts or {}))
        out = io.BytesIO()
        write_artifact(out, header, [source], compression=compression,
                       signing_key=key.private_key if key else None)
        path = tmp_path / f"{name}-{number}.mender"
        path.write_bytes(out.getvalue())
        return path

    return make


def payload_bytes(name: str, size: int = 300_000) -> bytes:
    """A recognisable image that is not a multiple of any block size."""
    return (name.encode() + b"\n").ljust(1000, b"#") * (size // 1000) + b"tail"
