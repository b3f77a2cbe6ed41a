"""Pytest fixtures for emulated devices: base_image, systemd_image, make_device, device,
shell, uboot.

Load it with `pytest_plugins = ["qemu.pytest_plugin"]`. When a test fails, the
full console log of each of its devices is attached to the report.
"""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from qemu.device import Device, make_overlay

CONSOLE_LOGS = pytest.StashKey[list]()


@dataclass(frozen=True)
class BaseImage:
    """build/images (or build/images-systemd): the disk, the release rootfs images and
    their layout.json."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.img"

    @property
    def layout(self) -> dict:
        return json.loads((self.directory / "layout.json").read_text())

    @property
    def ssh_key(self) -> Path:
        return self.directory / "keys" / "ssh_ed25519"

    def release(self, name: str) -> Path:
        return self.directory / f"{name}.ext4"


@pytest.fixture(scope="session")
def base_image(pytestconfig) -> BaseImage:
    """The device image, built by images/build.py (seconds when its inputs are unchanged)."""
    root = pytestconfig.rootpath
    subprocess.run([sys.executable, str(root / "images" / "build.py")], check=True)
    return BaseImage(root / "build" / "images")


@pytest.fixture(scope="session")
def systemd_image(pytestconfig) -> BaseImage:
    """The systemd flavour of the image (images/build.py --flavour systemd)."""
    root = pytestconfig.rootpath
    subprocess.run([sys.executable, str(root / "images" / "build.py"), "--flavour", "systemd"],
                   check=True)
    return BaseImage(root / "build" / "images-systemd")


@pytest.fixture
def make_device(tmp_path, request):
    """make_device(name, extra_disks=(), disk=None, image=None, boot_timeout=90) -> a
    powered-off Device.

    By default each device gets its own qcow2 overlay on `image` (the base image, built
    only when a test asks for it); all are powered off at teardown.
    """
    devices = []

    def make(name: str = "dut", extra_disks=(), disk: Path | None = None,
             image: BaseImage | None = None, boot_timeout: float = 90) -> Device:
        image = image or request.getfixturevalue("base_image")
        disk = disk or make_overlay(image.disk, tmp_path / f"{name}.qcow2")
        device = Device(name, disk, tmp_path / f"{name}-console.log", extra_disks=extra_disks,
                        ssh_key=image.ssh_key, boot_timeout=boot_timeout)
        request.node.stash.setdefault(CONSOLE_LOGS, []).append(device.log_path)
        devices.append(device)
        return device

    yield make
    for device in devices:
        device.close()


@pytest.fixture
def device(make_device) -> Device:
    return make_device()


@pytest.fixture
def shell(device) -> Device:
    device.transition("shell")
    return device


@pytest.fixture
def uboot(device) -> Device:
    device.transition("uboot")
    return device


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        for log in item.stash.get(CONSOLE_LOGS, []):
            if log.exists():
                report.sections.append((f"console log: {log.name}",
                                        log.read_text(errors="replace")))
