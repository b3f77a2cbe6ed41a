"""Over the air, end to end: `tern-server` on the host (HTTPS, SQLite), one emulated device
running `tern-updater daemon`, reaching the server at 10.0.2.2 (QEMU's user network)."""
import time

import pytest

from qemu.guest import data_marker, put_data_marker, release
from testkit import wait_for
from testkit.enroll import enroll

from .conftest import deploy

pytestmark = pytest.mark.qemu


@pytest.fixture
def enrolled(server, make_device):
    """A device on release-1 with the daemon running and accepted by the server, and a
    marker on /data."""
    device = make_device()
    device_id = enroll(server, device, server.live.port)
    put_data_marker(device)
    return device, device_id


def test_failed_updates_roll_back_and_report_failure(server, enrolled, base_image):
    """release-broken never boots: U-Boot falls back to A. release-unhealthy boots, fails
    its health check, and the updater rolls back. Both end as failures with a log."""
    device, device_id = enrolled
    deployment = deploy(server, base_image, "release-broken", device_id)
    assert device.expect_reboot(timeout=600) == "A"
    assert "Kernel panic" in device.log_path.read_text()
    wait_for(lambda: server.device_status(deployment, device_id) == "failure", timeout=180,
             what="failure on the server")
    log = "\n".join(server.device_log(deployment, device_id))
    assert "the trial boot of slot b failed" in log
    assert release(device) == "release-1"

    deployment = deploy(server, base_image, "release-unhealthy", device_id)
    assert device.expect_reboot(timeout=600) == "B"  # on trial
    assert device.expect_reboot(timeout=300) == "A"  # rolled back by the updater
    wait_for(lambda: server.device_status(deployment, device_id) == "failure", timeout=180,
             what="failure on the server")
    log = "\n".join(server.device_log(deployment, device_id))
    assert "50-always-fails: FAIL: exit 1: release-unhealthy: failing on purpose" in log
    assert release(device) == "release-1"
    assert server.attributes(device_id)["artifact_name"] == "release-1"
    assert data_marker(device) == "survives"


def test_deployment_of_a_release_that_hangs_fails_after_the_watchdog_reset(
        server, enrolled, base_image):
    """release-hang's init sleeps for ever, so the updater never runs on B: the watchdog
    the initramfs armed resets the board, U-Boot falls back to A, and the server gets the
    failure with the reason."""
    device, device_id = enrolled
    deployment = deploy(server, base_image, "release-hang", device_id)
    device.console.expect("release-hang: init hangs", time.monotonic() + 600)
    assert device.expect_reboot(timeout=240) == "A"  # nothing reboots a hung B but the watchdog
    assert "tern: bootcount 2 > bootlimit 1: rollback" in device.log_path.read_text()
    wait_for(lambda: server.device_status(deployment, device_id) == "failure", timeout=180,
             what="failure on the server")
    log = "\n".join(server.device_log(deployment, device_id))
    assert "the trial boot of slot b failed" in log
    assert "after the watchdog reset the board" in log
    assert release(device) == "release-1"
    assert data_marker(device) == "survives"


def test_an_ota_that_updates_the_agent_itself(server, enrolled, base_image):
    """release-next-agent carries the agent's next package version (`make deb-next`): the
    device's agent 0.1.0 installs it, and at the reboot the new agent resumes from the state
    store the old one wrote, commits, and reports itself in the inventory."""
    device, device_id = enrolled
    versions = base_image.layout["agent_versions"]
    old, new = versions["release-1"], versions["release-next-agent"]
    assert old != new
    assert device.run_check("tern-updater --version").strip() == f"tern-updater {old}"
    wait_for(lambda: server.attributes(device_id).get("client_version") == f"tern-updater {old}",
             timeout=60, what="the old agent's version in the inventory")
    deployment = deploy(server, base_image, "release-next-agent", device_id)

    assert device.expect_reboot(timeout=600) == "B"
    # Nothing typed before the commit: the trial boot's resume has the CPU to itself.
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=180,
             what="success on the server")
    assert "release-next-agent: committed" in server.device_log(deployment, device_id)
    assert device.run_check("tern-updater --version").strip() == f"tern-updater {new}"
    wait_for(lambda: server.attributes(device_id).get("client_version") == f"tern-updater {new}",
             timeout=120, what="the new agent's version in the inventory")
    assert server.attributes(device_id)["artifact_name"] == "release-next-agent"
    assert release(device) == "release-next-agent"
    assert data_marker(device) == "survives"
