"""The updater's unit tests run on a simulated A/B device on the host (testkit.host_device)."""
import pytest

from testkit.host_device import Device, new_device


@pytest.fixture
def device(tmp_path) -> Device:
    return new_device(tmp_path / "device")
