"""Over the air, end to end: `tern-server` on the host (HTTPS, SQLite), one emulated device
running `tern-updater daemon`, reaching the server at 10.0.2.2 (QEMU's user network)."""
import subprocess
import sys
import time
from pathlib import Path

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


def indexed_artifact(base_image, name: str, out: Path) -> Path:
    """The release's artifact as images/build.py writes it, with a block index."""
    subprocess.run([sys.executable, "-m", "artifact.cli", "write", "rootfs-image",
                    "-f", base_image.release(name), "-n", name, "-t", "qemu-arm64",
                    "-k", base_image.directory / "keys" / "artifact.key", "-o", out,
                    "--block-index"], check=True)
    return out


def test_deployment_of_release_2_with_a_block_index_fetches_a_delta(server, enrolled,
                                                                    base_image, tmp_path):
    """release-1 -> release-2 with a block index: the device takes the blocks its slots
    hold and fetches the rest by Range; the bytes the server sent, from its request log,
    are a fraction of the artifact. (The other deployments here stream full artifacts.)"""
    device, device_id = enrolled
    artifact = indexed_artifact(base_image, "release-2", tmp_path / "release-2.mender")
    assert server.attributes(device_id)["delta_update"] == "block-index-1"
    started = time.monotonic()
    server.cli("artifacts", "upload", str(artifact))
    deployment = server.cli("deployments", "create", "--name", "release-2", "--artifact-name",
                            "release-2", "--device", device_id)["id"]

    assert device.expect_reboot(timeout=600) == "B"
    rebooted = time.monotonic()
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=180,
             what="success on the server")
    sent = server.live.sent_bytes()
    print(f"release-2 (delta): {rebooted - started:.0f} s to the reboot, "
          f"{time.monotonic() - started:.0f} s to success, {sent} of "
          f"{artifact.stat().st_size} bytes sent")
    wait_for(lambda: server.attributes(device_id).get("artifact_name") == "release-2",
             timeout=60, what="the inventory after the commit")
    log = server.device_log(deployment, device_id)
    assert "release-2: committed" in log
    assert not [m for m in log if "downloading the full artifact" in m]
    assert sent < 0.2 * artifact.stat().st_size  # 8.5 % by the planner (BENCHMARKS.md)
    [row] = [r for r in server.get(f"/deployments/{deployment}/devices")
             if r["device_id"] == device_id]
    assert row["download"]["mode"] == "adaptive" and row["download"]["fetched"] == sent
    assert device.slot == "B"  # the prompt was device-B#
    assert release(device) == "release-2"
    assert data_marker(device) == "survives"
    assert "upgrade_available=0" in device.run_check("fw_printenv upgrade_available")


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
