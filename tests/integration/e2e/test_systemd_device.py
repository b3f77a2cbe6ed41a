"""The systemd device (images/build.py --flavour systemd: systemd as PID 1, the agent from
its Debian package run by its own units) in one sequence on one device, to spend as few
boots as it can: against `tern-server`, a USB stick with a wrongly signed artifact (no
reboot), an update that never boots, systemd's watchdog restarting a daemon that stopped
feeding it, an update to success, one whose health check fails, and a USB stick with a
signed artifact (docs/usb-install.md), each ending with its status on the server or the
device; last, a power cut that tore /data's superblock."""
import time

import pytest

from qemu.guest import data_marker, fw_env, put_data_marker, release
from testkit import wait_for
from testkit.artifacts import build_artifact
from testkit.enroll import enroll
from testkit.usb_stick import make_usb_stick

from .conftest import deploy

pytestmark = pytest.mark.qemu

# A systemd boot under emulation is slower than busybox's; generous for a loaded host.
BOOT_TIMEOUT = 600
# The test's own drop-in on slot A, for time's sake: a daemon started with it misses its
# watchdog 20 s after it stops (the package's: 10 min); SIGSTOPped, it cannot take the
# watchdog's SIGABRT, so systemd SIGKILLs it 10 s later (TimeoutAbortSec; default 90 s) and
# starts it again 2 s after that (RestartSec; the package's 30 s).
TEST_DROP_IN = "/etc/systemd/system/tern-updater.service.d/zz-test-watchdog.conf"
KILL_AND_RESTART = "TimeoutAbortSec=10s\\nRestartSec=2s\\n"


def unit_property(device, unit: str, name: str) -> str:
    """A unit's property; unit "" for the manager's."""
    return device.run_check(f"systemctl show --no-pager --property={name} --value {unit}").strip()


def journal(device, unit: str) -> str:
    return device.run_check(f"journalctl --no-pager -b -o cat -u {unit}", timeout=120)


def wait_for_status(server, deployment: str, device_id: str, status: str) -> list[str]:
    wait_for(lambda: server.device_status(deployment, device_id) == status,
             timeout=BOOT_TIMEOUT, what=f"{status} on the server")
    return server.device_log(deployment, device_id)


def assert_resume_unit_succeeded(device) -> None:
    """A rollback is a normal outcome: the boot's resume unit ends in success (its exit 3
    counts as one), the failure goes to the server."""
    assert unit_property(device, "tern-updater-resume.service", "Result") == "success"
    assert unit_property(device, "tern-updater-resume.service", "ActiveState") != "failed"


def test_systemd_device_usb_sticks_watchdog_restart_update_and_rollbacks(
        server, make_device, systemd_image, keys, tmp_path):
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
    # /data was checked before it was mounted (the fstab's pass 2: systemd-fsck ran e2fsck).
    assert "clean," in journal(device, "systemd-fsck@dev-vda4.service")
    enrolled = time.monotonic()

    # A stick whose artifact another key signed: refused, nothing changes.
    wrong = tmp_path / "release-2.mender"  # the name the device expects, the wrong key
    wrong.write_bytes(build_artifact({"rootfs.ext4": b"not the image\n" * 4096},
                                     name="release-2", signing_key=keys["other-rsa"].private_key))
    offsets = " ".join(map(str, systemd_image.layout["env"]["offsets"]))
    snapshot = ("head -c 16M /dev/vda3 | md5sum; fw_printenv; "
                f"for offset in {offsets}; do dd if=/dev/vda bs=16k count=1 iflag=skip_bytes "
                "skip=$offset 2>/dev/null | md5sum; done; "
                "tern-updater status --json; find /data -type f | sort | xargs md5sum")
    before = device.run_check(snapshot, timeout=120)
    device.plug_usb_stick(make_usb_stick(tmp_path / "wrong.img", wrong), name="wrong")
    device.console.expect(r"tern-usb: REFUSED: .*signature does not verify.*nothing installed",
                          time.monotonic() + 300)
    assert device.run_check(snapshot, timeout=120) == before  # slot B, the environment, /data
    device.unplug_usb_stick("wrong")
    refused = time.monotonic()

    # An update that never boots; U-Boot falls back to A, whose drop-in shortens the watchdog.
    device.run_check(f"printf '[Service]\\nWatchdogSec=20s\\n{KILL_AND_RESTART}' "
                     f"> {TEST_DROP_IN} && sync")
    deployment = deploy(server, systemd_image, "release-broken", device_id)
    assert device.expect_reboot() == "A"  # B panics, U-Boot falls back
    console = device.log_path.read_text()
    assert "Kernel panic" in console and "tern: bootcount 2 > bootlimit 1: rollback" in console
    log = "\n".join(wait_for_status(server, deployment, device_id, "failure"))
    assert "the trial boot of slot b failed" in log
    assert_resume_unit_succeeded(device)
    broken = time.monotonic()

    # A daemon that stops feeding systemd's watchdog is killed and started again. The drop-in
    # goes first (the running daemon keeps the 20 s it started with), so the new daemon, the
    # one that runs the next update, has the package's 10 min.
    wait_for(lambda: unit_property(device, "tern-updater.service", "ActiveState") == "active",
             timeout=BOOT_TIMEOUT, what="the daemon")
    assert unit_property(device, "tern-updater.service", "WatchdogUSec") == "20s"
    stopped = unit_property(device, "tern-updater.service", "MainPID")
    device.run_check(f"kill -STOP {stopped} && printf '[Service]\\n{KILL_AND_RESTART}' "
                     f"> {TEST_DROP_IN} && systemctl daemon-reload")
    wait_for(lambda: unit_property(device, "tern-updater.service", "NRestarts") == "1"
             and unit_property(device, "tern-updater.service", "ActiveState") == "active",
             timeout=BOOT_TIMEOUT, interval=5, what="systemd's restart of the daemon")
    assert unit_property(device, "tern-updater.service", "MainPID") != stopped
    assert unit_property(device, "tern-updater.service", "WatchdogUSec") == "10min"
    assert "Watchdog timeout (limit 20s)!" in journal(device, "tern-updater.service")
    restarted = time.monotonic()

    # The restarted daemon polls, takes the next deployment, and the update is committed.
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
    # /data was checked before it was mounted (the fstab's pass 2: systemd-fsck ran e2fsck).
    assert "clean," in journal(device, "systemd-fsck@dev-vda4.service")
    assert unit_property(device, "tern-updater-resume.service", "Result") == "success"
    updated = time.monotonic()

    deployment = deploy(server, systemd_image, "release-unhealthy", device_id)
    assert device.expect_reboot() == "A"  # on trial
    assert device.expect_reboot() == "B"  # rolled back by resume
    log = "\n".join(wait_for_status(server, deployment, device_id, "failure"))
    assert "unit systemd-networkd.service: ready" in log
    assert "50-always-fails: FAIL: exit 1: release-unhealthy: failing on purpose" in log
    assert release(device) == "release-2"
    assert_resume_unit_succeeded(device)
    unhealthy = time.monotonic()

    # A stick with a signed artifact: udev starts tern-usb-install@sdXN.service, which
    # installs it into slot A and reboots; the boot's resume commits; the stick, still in,
    # is left alone at that boot.
    device.plug_usb_stick(make_usb_stick(
        tmp_path / "stick.img", systemd_image.release("release-1").with_suffix(".mender")))
    device.console.expect(r"tern-usb: installing release-1.mender from /dev/sd[a-z]1",
                          time.monotonic() + 300)
    device.console.expect("tern-usb: installed; rebooting into the new system",
                          time.monotonic() + BOOT_TIMEOUT)
    assert device.expect_reboot() == "A"
    device.console.expect("tern-usb: release-1 is installed, or was tried, already",
                          time.monotonic() + BOOT_TIMEOUT)
    assert "release-1: installed and committed" in journal(device, "tern-updater-resume.service")
    assert release(device) == "release-1"
    env = fw_env(device)
    assert (env["mender_boot_part"], env["upgrade_available"]) == ("2", "0")
    assert data_marker(device) == "survives"
    stick = time.monotonic()

    # A power cut that tore /data's superblock (ext4 writes it in place at each mount): its
    # second sector zeroed under a frozen /data, then the reset button. systemd-fsck (with
    # the boot script's fsck.repair=yes) takes a backup superblock; /data mounts, all on it.
    device.run_check("fsfreeze --freeze /data && dd if=/dev/zero of=/dev/vda4 bs=512 seek=3 "
                     "count=1 conv=notrunc oflag=direct 2>/dev/null")
    device.reset()
    assert device.expect_reboot() == "A"
    assert "Superblock invalid, trying backup blocks" in journal(
        device, "systemd-fsck@dev-vda4.service")
    assert data_marker(device) == "survives"
    assert release(device) == "release-1"
    torn = time.monotonic()

    print(f"systemd device: enrolled {enrolled - started:.0f} s, wrongly signed stick "
          f"{refused - enrolled:.0f} s, release-broken {broken - refused:.0f} s, watchdog "
          f"restart {restarted - broken:.0f} s, release-2 {updated - restarted:.0f} s, "
          f"release-unhealthy {unhealthy - updated:.0f} s, signed stick {stick - unhealthy:.0f} s, "
          f"torn /data superblock {torn - stick:.0f} s")
