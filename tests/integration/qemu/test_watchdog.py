"""The hardware watchdog (QEMU's i6300esb): armed by the initramfs at every boot, stopped
by `tern-updater resume` once the boot is healthy, and the rollback of a slot that hangs
before the updater runs."""
import json
import time

import pytest

from qemu.guest import fw_env, release
from testkit.http_files import serve_directory

pytestmark = pytest.mark.qemu

CONFIG = "/etc/tern/updater.toml"


def wait_for_resume(device) -> None:
    """Until the boot's `tern-updater resume` (rcS, in the background) has ended."""
    device.run_check(  # [r]: not this grep's own command line
        "while grep -qs '[r]esume' /proc/[0-9]*/cmdline; do sleep 1; done",
        timeout=180)


def watchdog(device, attribute: str) -> str:
    return device.run_check(f"cat /sys/class/watchdog/watchdog0/{attribute}").strip()


def test_a_healthy_boot_arms_the_watchdog_and_resume_stops_it(shell, base_image):
    log = shell.run_check("dmesg | grep -i -e i6300esb -e watchdog")
    timeout = base_image.layout["watchdog"]["timeout"]
    assert f"heartbeat={timeout} sec" in log
    assert "watchdog did not stop!" in log  # the initramfs left it running
    wait_for_resume(shell)
    assert watchdog(shell, "state") == "inactive"
    assert watchdog(shell, "bootstatus") == "0"  # a power-on, not a watchdog reset


def test_a_slot_that_hangs_is_reset_by_the_watchdog_and_rolled_back(make_device, base_image):
    device = make_device()
    device.transition("shell")
    wait_for_resume(device)
    with serve_directory(base_image.directory) as url:
        device.run_check(  # udhcpc runs in the background: wait until it has a lease
            f"for i in $(seq 30); do wget -q -O /dev/null {url}/layout.json && exit 0; "
            "sleep 1; done; exit 1", timeout=60)
        device.run_check(f"tern-updater --config {CONFIG} install {url}/release-hang.mender",
                         timeout=600)
    assert fw_env(device)["upgrade_available"] == "1"
    device.console.sendline("reboot")
    device.console.expect("release-hang: init hangs", time.monotonic() + 120)
    hung = time.monotonic()
    assert device.expect_reboot(timeout=240) == "A"  # no reboot but the watchdog's reset
    back = time.monotonic()
    print(f"\nwatchdog rollback: {back - hung:.0f} s from the hang to the shell of slot A")

    console = device.log_path.read_text()
    assert "tern: bootcount 2 > bootlimit 1: rollback" in console
    device.qmp.execute("query-status")  # reads the events QEMU sent meanwhile
    assert {"event": "WATCHDOG", "action": "reset"} in [
        {"event": event["event"], **event.get("data", {})} for event in device.qmp.events]
    assert watchdog(device, "bootstatus") == "32"  # WDIOF_CARDRESET: the watchdog reset it
    assert release(device) == "release-1"

    wait_for_resume(device)
    status = json.loads(device.run_check(f"tern-updater --config {CONFIG} status --json"))
    assert status["state"] == "Idle"
    result = status["last_result"]
    assert (result["artifact_name"], result["status"]) == ("release-hang", "failure")
    assert "the trial boot of slot b failed" in result["error"]
    assert "after the watchdog reset the board" in result["error"]
    assert (fw_env(device)["mender_boot_part"], fw_env(device)["upgrade_available"]) == ("2", "0")
    assert watchdog(device, "state") == "inactive"  # the old slot is healthy: stopped
