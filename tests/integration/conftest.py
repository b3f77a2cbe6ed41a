"""Integration tests: emulated devices come from the qemu harness's fixtures; loop devices.

Imported rather than listed in `pytest_plugins`, which pytest only accepts in the
top-level conftest (a plain `pytest` from the root would refuse this file).
"""
import subprocess
from pathlib import Path

import pytest

from qemu.pytest_plugin import (  # noqa: F401
    base_image,
    device,
    make_device,
    pytest_runtest_makereport,
    shell,
    systemd_image,
    uboot,
)


@pytest.fixture
def loop_devices(tmp_path):
    """attach(path) -> /dev/loopN; every device is detached afterwards, pass or fail."""
    attached = []

    def attach(path: Path) -> str:
        loop = subprocess.run(["losetup", "-f", "--show", str(path)], check=True,
                              capture_output=True, text=True).stdout.strip()
        attached.append(loop)
        return loop

    attach.attached = attached  # for devices attached with other options (offsets)
    yield attach
    for loop in attached:
        subprocess.run(["losetup", "-d", loop], check=False)
