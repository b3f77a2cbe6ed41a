"""The systemd device (images/build.py --flavour systemd: systemd as PID 1, the agent from
its Debian package run by its own units) in one sequence on one device, to spend as few
boots as it can: against `tern-server`, an update to success, one that never boots and one
whose health check fails, each ending with its status on the server."""
import time

import pytest

from qemu.guest import fw_env, put_data_marker, release
from testkit import wait_for
from testkit.enroll import enroll

from .conftest import deploy

pytestmark = pytest.mark.qemu

# A systemd boot under emulation is slower than busybox's; generous for a loaded host.
BOOT_TIMEOUT = 600


def unit_property(device, unit: str, name: str) -> str:
    """A unit's property; unit "" for the manager's."""
    return device.run_check(f"systemctl show --no-pager --property={name} --value {unit}").strip()


def journal(device, unit: str) -> str:
    return device.run_check(f"journalctl --no-pager -b -o cat -u {unit}", timeout=120)


def wait_for_status(server, deployment: str, device_id: str, status: str) -> list[str]:
    wait_for(lambda: server.device_status(deployment, device_id) == status,
             timeout=BOOT_TIMEOUT, what=f"{status} on the server")
    return server.device_log(deployment, device_id)


def test_systemd_device_updates_then_rolls_back_a_boot_failure_and_a_health_failure(
        server, make_device, systemd_image):
    started = time.monotonic()
    device = make_device(image=systemd_image, boot_timeout=BOOT_TIMEOUT)
    device_id = enroll(server, device, server.live.port, timeout=BOOT_TIMEOUT)
    put_data_marker(device)
    assert device.run_check("cat /proc/1/comm").strip() == "systemd"
    # Type=notify: active only after the daemon's READY=1; its watchdog is on.
    assert unit_property(device, "tern-updater.service", "ActiveState") == "active"
    assert unit_property(device, "tern-updater.service", "WatchdogUSec") == "10min"
    # systemd holds /dev/watchdog (RuntimeWatchdogSec); resume left it alone and went on.
    assert unit_property(device, "", "RuntimeWatchdogUSec") == "30s"
    assert "watchdog /dev/watchdog: Device or resource busy" in journal(
        device, "tern-updater-resume.service")
    enrolled = time.monotonic()

    deployment = deploy(server, systemd_image, "release-2", device_id)
    assert device.expect_reboot() == "B"
    log = "\n".join(wait_for_status(server, deployment, device_id, "success"))
    assert "unit dropbear.service: ready" in log  # health_wait_units, then health.d
    assert "release-2: committed" in log
    assert release(device) == "release-2"
    assert fw_env(device)["upgrade_available"] == "0"
    # The commit happened with systemd holding the watchdog, which the resume left alone.
    assert "watchdog /dev/watchdog: Device or resource busy" in journal(
        device, "tern-updater-resume.service")
    assert unit_property(device, "tern-updater-resume.service", "Result") == "success"
    updated = time.monotonic()

    deployment = deploy(server, systemd_image, "release-broken", device_id)
    assert device.expect_reboot() == "B"  # A panics, U-Boot falls back
    console = device.log_path.read_text()
    assert "Kernel panic" in console and "tern: bootcount 2 > bootlimit 1: rollback" in console
    log = "\n".join(wait_for_status(server, deployment, device_id, "failure"))
    assert "the trial boot of slot a failed" in log
    broken = time.monotonic()

    deployment = deploy(server, systemd_image, "release-unhealthy", device_id)
    assert device.expect_reboot() == "A"  # on trial
    assert device.expect_reboot() == "B"  # rolled back by resume
    log = "\n".join(wait_for_status(server, deployment, device_id, "failure"))
    assert "unit systemd-networkd.service: ready" in log
    assert "50-always-fails: FAIL: exit 1: release-unhealthy: failing on purpose" in log
    assert release(device) == "release-2"
    unhealthy = time.monotonic()

    print(f"systemd device: enrolled {enrolled - started:.0f} s, release-2 "
          f"{updated - enrolled:.0f} s, release-broken {broken - updated:.0f} s, "
          f"release-unhealthy {unhealthy - broken:.0f} s")
