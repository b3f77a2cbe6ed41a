"""Loop devices, plus the simulated device of the updater's unit tests."""
import importlib.util
import subprocess
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "updater_unit_conftest", Path(__file__).parents[2] / "unit/updater/conftest.py")
unit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(unit)
make_artifact = unit.make_artifact


@pytest.fixture
def loop_devices(tmp_path):
    """attach(path) -> /dev/loopN; every device is detached afterwards, pass or fail."""
    attached = []

    def attach(path: Path) -> str:
        device = subprocess.run(["losetup", "-f", "--show", str(path)], check=True,
                                capture_output=True, text=True).stdout.strip()
        attached.append(device)
        return device

    attach.attached = attached  # for devices attached with other options (offsets)
    yield attach
    for device in attached:
        subprocess.run(["losetup", "-d", device], check=False)
