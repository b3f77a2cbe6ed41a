"""Standalone install, commit and rollback on a simulated device (file backend)."""
import errno
import fcntl
import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from testkit.host_device import FACTORY_A, add_health_check, new_device, payload_bytes
from updater import cli
from updater.agent import health


def install_and_reboot(device, artifact) -> int:
    assert device.run("install", str(artifact)) == 0
    assert device.power_on() == "b"
    return device.run("resume")


def test_install_reboot_commit(device, make_artifact, capfd):
    artifact = make_artifact(name="release-2")
    assert device.run("install", str(artifact)) == 0
    assert device.env()["mender_boot_part"] == "3" and device.env()["upgrade_available"] == "1"
    assert device.slot("b").read_bytes() == payload_bytes("release-2")
    assert device.run("commit") == 1  # not rebooted yet
    assert "not rebooted" in capfd.readouterr().err
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    assert device.env()["upgrade_available"] == "0"
    assert device.power_on() == "b"
    capfd.readouterr()
    assert device.run("show-artifact") == 0
    assert capfd.readouterr().out == "release-2\n"
    assert device.run("show-provides") == 0
    assert "rootfs-image.version=release-2\n" in capfd.readouterr().out
    assert device.run("commit") == 2 and device.run("rollback") == 2
    assert device.last_result()["status"] == "success"


def test_show_artifact_of_a_file_verifies_its_signature_and_changes_nothing(
        device, make_artifact, keys, tmp_path, capfd):
    """What tern-usb-install asks first: a wrongly signed stick is refused before the
    updater records anything (no state, no last result)."""
    device.settings["verify_keys"] = [str(keys["rsa"].public_path)]
    assert device.run("show-artifact", str(make_artifact(name="release-3", key=keys["rsa"]))) == 0
    assert capfd.readouterr().out == "release-3\n"
    wrongly_signed = make_artifact(name="release-3", key=keys["other-rsa"])
    assert device.run("show-artifact", str(wrongly_signed)) == 1
    error = capfd.readouterr().err
    assert error.startswith(f"tern-updater: {wrongly_signed}: ") and "does not verify" in error
    (tmp_path / "junk.mender").write_bytes(b"not an artifact")
    assert device.run("show-artifact", str(tmp_path / "junk.mender")) == 1
    assert capfd.readouterr().err.startswith(f"tern-updater: {tmp_path / 'junk.mender'}: ")
    assert not device.config.data.exists() or list(device.config.data.iterdir()) == []


def test_commit_command_after_the_reboot(device, make_artifact):
    assert device.run("install", str(make_artifact())) == 0
    device.power_on()
    assert device.run("commit") == 0
    assert device.provides()["artifact_name"] == "release-2"


def test_second_update_goes_back_to_slot_a(device, make_artifact):
    assert install_and_reboot(device, make_artifact(name="release-2")) == 0
    assert device.run("install", str(make_artifact(name="release-3"))) == 0
    assert device.slot("a").read_bytes() == payload_bytes("release-3")
    assert device.power_on() == "a"
    assert device.run("resume") == 0
    assert device.provides()["artifact_name"] == "release-3"


def test_rollback_before_the_reboot(device, make_artifact):
    assert device.run("install", str(make_artifact())) == 0
    assert device.run("rollback") == 0
    assert device.env()["mender_boot_part"] == "2" and device.env()["upgrade_available"] == "0"
    assert device.power_on() == "a"
    assert device.stored()["state"] == "Idle"
    assert device.last_result()["status"] == "failure"
    assert device.slot("a").read_bytes() == FACTORY_A


def test_trial_boot_that_never_reaches_the_updater_rolls_back(device, make_artifact):
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"  # hangs before the updater runs: the watchdog resets
    assert device.power_on() == "a"  # bootcount 2 > bootlimit 1: the boot script falls back
    assert device.run("resume") == 3  # the update failed and is over: a normal outcome
    result = device.last_result()
    assert result["status"] == "failure" and "fell back to slot a" in result["error"]


def test_second_install_while_one_is_pending_is_refused(device, make_artifact, capfd):
    assert device.run("install", str(make_artifact())) == 0
    assert device.run("install", str(make_artifact(name="release-3"))) == 1
    assert "in progress" in capfd.readouterr().err


def test_inconsistent_boot_environment_is_refused(device, make_artifact, capfd):
    before = device.env_bytes()
    device.power_on()
    (device.root / "cmdline").write_text(f"root={device.slot('b')}\n")  # env boots a
    assert device.run("install", str(make_artifact())) == 1
    assert "no match between boot and root partitions" in capfd.readouterr().err
    assert device.env_bytes() == before
    assert device.slot("b").read_bytes() == b"\0" * len(device.slot("b").read_bytes())


def test_unknown_root_device_is_refused(device, make_artifact, capfd):
    (device.root / "cmdline").write_text("root=/dev/sdz9\n")
    assert device.run("install", str(make_artifact())) == 1
    assert "neither slot" in capfd.readouterr().err


# -- rejections: nothing is made bootable, the boot environment stays as it was -----------

def corrupt(path, offset=-3000):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(data)
    return path


def corrupt_member(path, prefix):
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith(prefix))
    return corrupt(path, member.offset_data + member.size // 2)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


REJECTIONS = {
    "unsigned-with-keys": (lambda make, keys: make(), ["rsa"], "not signed"),
    "wrong-key": (lambda make, keys: make(key=keys["other-rsa"]), ["rsa"], "verif"),
    "wrong-key-type": (lambda make, keys: make(key=keys["ecdsa"]), ["rsa"], "verif"),
    "corrupt-payload": (lambda make, keys: corrupt(make(compression="none"), -5000), [],
                        "invalid checksum"),
    "corrupt-compressed-payload": (lambda make, keys: corrupt(make()), [], "not a valid data"),
    "corrupt-header": (lambda make, keys: corrupt_member(make(), "header.tar"), [],
                       "invalid checksum"),
    "truncated": (lambda make, keys: truncate(make(compression="none")), [], "truncated"),
    "other-device-type": (lambda make, keys: make(device_types=["raspberrypi4"]), [],
                          "not compatible with device qemu-arm64"),
    "unmet-artifact-depends": (lambda make, keys: make(artifact_depends={
        "artifact_name": ["release-1"]}), [], "depends on artifact_name"),
    "unmet-payload-depends": (lambda make, keys: make(depends={
        "rootfs-image.version": "release-1"}), [], "depends on rootfs-image.version"),
}


@pytest.mark.parametrize("bootloader", ["file", "uboot"])
@pytest.mark.parametrize("case", REJECTIONS)
def test_rejected_artifact_never_becomes_bootable(tmp_path, make_artifact, keys, capfd, case,
                                                  bootloader):
    device = new_device(tmp_path / "device", bootloader)
    make, key_names, reason = REJECTIONS[case]
    artifact = make(make_artifact, keys)
    device.settings["verify_keys"] = [str(keys[name].public_path) for name in key_names]
    before = device.env_bytes()
    assert device.run("install", str(artifact)) == 1
    err = capfd.readouterr().err
    assert "update failed" in err and reason in err.lower()
    assert device.env_bytes() == before
    assert device.power_on() == "a"
    assert device.slot("a").read_bytes() == FACTORY_A
    assert device.stored()["state"] == "Idle"
    result = device.last_result()
    assert result["status"] == "failure" and result["error"]
    assert device.provides() == {}


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_signed_artifact_installs_with_its_key_among_others(device, make_artifact, keys, kind):
    device.settings["verify_keys"] = [str(keys["other-rsa"].public_path),
                                      str(keys[kind].public_path)]
    assert install_and_reboot(device, make_artifact(key=keys[kind])) == 0


# -- health-gated commit ------------------------------------------------------------------

def test_failing_health_check_rolls_back_with_its_output(device, make_artifact):
    add_health_check(device, "10-ok", "echo fine")
    add_health_check(device, "20-app", "echo app not answering; exit 3")
    assert install_and_reboot(device, make_artifact()) == 1
    assert device.env()["mender_boot_part"] == "2"
    assert device.stored()["state"] == "ArtifactRollbackReboot"  # waiting for the reboot
    assert device.power_on() == "a"
    assert device.run("resume") == 3
    result = device.last_result()
    assert result["status"] == "failure"
    assert result["health"] == ["10-ok: pass: fine", "20-app: FAIL: exit 3: app not answering"]
    assert "health checks failed" in result["error"]


def test_health_check_timeout_fails(device, make_artifact):
    device.settings["health_timeout"] = 0.3
    add_health_check(device, "10-hangs", "sleep 30")
    assert install_and_reboot(device, make_artifact()) == 1
    device.power_on()
    device.run("resume")
    assert "timed out" in device.last_result()["health"][0]


def test_health_waits_for_ports_and_processes(device, make_artifact):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        device.settings["health_wait_ports"] = [f"127.0.0.1:{server.getsockname()[1]}"]
        this_process = Path("/proc/self/comm").read_text().strip()
        device.settings["health_wait_processes"] = [this_process]
        assert install_and_reboot(device, make_artifact()) == 0
    assert device.last_result()["health"] == [f"process {this_process}: ready",
                                              f"port {device.settings['health_wait_ports'][0]}: "
                                              "ready"]


def test_missing_process_fails_after_the_wait(device, make_artifact):
    device.settings["health_wait_processes"] = ["no-such-daemon"]
    device.settings["health_wait_timeout"] = 0.5
    assert install_and_reboot(device, make_artifact()) == 1


@pytest.fixture
def systemd_units(tmp_path, monkeypatch):
    """A stand-in `systemctl` on PATH: `show` prints a unit's LoadState and ActiveState
    from units/<name> ("loaded active", "loaded failed"...); no file: not-found."""
    units = tmp_path / "units"
    units.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f"""#!/bin/sh
unit=$3
load=not-found active=inactive
[ -e {units}/$unit ] && read load active < {units}/$unit
echo LoadState=$load
echo ActiveState=$active
""")
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return units


def test_health_waits_for_systemd_units(device, make_artifact, systemd_units):
    (systemd_units / "app.service").write_text("loaded activating\n")
    device.settings["health_wait_units"] = ["app.service"]
    starts = threading.Timer(1.0, (systemd_units / "app.service").write_text,
                             ["loaded active\n"])
    starts.start()
    assert install_and_reboot(device, make_artifact()) == 0
    assert device.last_result()["health"] == ["unit app.service: ready"]


@pytest.mark.parametrize("state, reason", [("loaded failed", "failed"),
                                           (None, "no such unit (not-found)")])
def test_a_failed_or_unknown_unit_fails_the_health_check_at_once(
        device, make_artifact, systemd_units, state, reason):
    if state:
        (systemd_units / "app.service").write_text(state + "\n")
    device.settings["health_wait_units"] = ["app.service"]
    device.settings["health_wait_timeout"] = 60.0  # not waited for
    started = time.monotonic()
    assert install_and_reboot(device, make_artifact()) == 1
    device.power_on()
    device.run("resume")
    assert device.last_result()["health"] == [f"unit app.service: {reason}"]
    assert time.monotonic() - started < 30


# -- status, configuration ----------------------------------------------------------------

def test_status_json(device, make_artifact, capfd):
    assert device.run("install", str(make_artifact())) == 0
    capfd.readouterr()
    assert device.run("status", "--json") == 0
    status = json.loads(capfd.readouterr().out)
    assert status["state"] == "ArtifactReboot"
    assert status["artifact_name"] == "factory"
    assert status["update"]["artifact_name"] == "release-2"
    assert status["update"]["from_slot"] == "a" and status["update"]["to_slot"] == "b"
    assert status["running_slot"] == "a"
    assert status["boot"] == {"boot_slot": "b", "trial_pending": True}
    assert device.run("status") == 0
    assert "trial pending" in capfd.readouterr().out


def test_flags_override_the_config_file(device, make_artifact, capfd):
    argv_device_type = ["install", "--device-type", "raspberrypi4", str(make_artifact())]
    assert device.run(*argv_device_type) == 1
    assert "not compatible with device raspberrypi4" in capfd.readouterr().err


def test_unknown_setting_in_the_config_file(device, capfd):
    device.toml.write_text(device.toml.read_text() + "colour = 'blue'\n")
    assert cli.main(["--config", str(device.root / "tern.toml"), "status"]) == 1
    toml = device.root / "tern.toml"
    assert f"tern-updater: {toml}: unknown key 'colour'\n" == capfd.readouterr().err


def test_install_from_an_http_url(device, make_artifact):
    artifact = make_artifact()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(artifact.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/{artifact.name}"
            assert device.run("install", url) == 0
        finally:
            server.shutdown()
            thread.join()
    assert device.slot("b").read_bytes() == payload_bytes("release-2")


def test_watchdog_is_fed_during_health_checks_and_disarmed_on_success(device, make_artifact):
    watchdog = device.root / "watchdog"  # a regular file records what /dev/watchdog gets
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)
    add_health_check(device, "10-slow", "sleep 0.3")
    assert install_and_reboot(device, make_artifact()) == 0
    fed = watchdog.read_bytes()
    assert fed.endswith(b"V") and fed.count(b"\0") >= 2


def test_watchdog_stays_armed_when_the_checks_fail(device, make_artifact):
    watchdog = device.root / "watchdog"
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)
    add_health_check(device, "10-fails", "sleep 0.2; exit 1")
    assert install_and_reboot(device, make_artifact()) == 1
    assert b"V" not in watchdog.read_bytes()  # a hang from here on ends in a reset


def test_resume_on_a_boot_without_an_update_stops_the_watchdog(device):
    watchdog = device.root / "watchdog"  # armed by the initramfs at every boot
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)
    device.power_on()
    assert device.run("resume") == 2
    assert watchdog.read_bytes() == b"\0V"


def test_resume_that_fails_stops_the_watchdog_only_outside_a_trial_boot(device, make_artifact):
    watchdog = device.root / "watchdog"
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)
    store = device.root / "data" / "state.json"
    device.power_on()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text('{"version": 99}')  # resume cannot read it: an error, not an update
    assert device.run("resume") == 1
    assert watchdog.read_bytes() == b"\0V"  # committed slot: a reset would not help
    store.unlink()
    watchdog.write_bytes(b"")
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"
    store.write_text('{"version": 99}')
    assert device.run("resume") == 1
    assert watchdog.read_bytes() == b"\0"  # trial boot: the watchdog resets, U-Boot falls back


def test_busy_watchdog_does_not_fail_the_trial_boot(device, make_artifact, monkeypatch, capfd):
    """systemd (RuntimeWatchdogSec) holds /dev/watchdog: the update commits all the same."""
    watchdog = device.root / "watchdog"
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)
    real_open = os.open

    def open_busy(path, flags, *args, **options):  # os.open is the whole process's
        if str(path) == str(watchdog):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        return real_open(path, flags, *args, **options)

    monkeypatch.setattr(health.os, "open", open_busy)
    assert install_and_reboot(device, make_artifact()) == 0
    assert device.last_result()["status"] == "success"
    assert f"watchdog {watchdog}: Device or resource busy; not fed" in capfd.readouterr().err
    assert watchdog.read_bytes() == b""


def test_a_watchdog_reset_is_named_in_the_reason_of_the_failed_trial_boot(
        device, make_artifact, monkeypatch):
    watchdog = device.root / "watchdog"
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)

    def boot_status(fd, request, status):  # the driver's answer after a watchdog reset
        assert request == health.WDIOC_GETBOOTSTATUS
        status[0] = health.WDIOF_CARDRESET

    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"  # hangs: the watchdog resets the board
    assert device.power_on() == "a"  # bootcount 2 > bootlimit 1: the boot script falls back
    monkeypatch.setattr(health.fcntl, "ioctl", boot_status)
    assert device.run("resume") == 3
    error = device.last_result()["error"]
    assert "the trial boot of slot b failed" in error
    assert "after the watchdog reset the board" in error
    assert watchdog.read_bytes() == b"\0V"  # the old slot is healthy


def test_fail_points_from_the_environment(device, make_artifact, monkeypatch):
    monkeypatch.setenv("TERN_FAILPOINTS", "before:ArtifactInstall")
    result = subprocess.run([sys.executable, "-m", "updater.cli", "--config", str(device.toml),
                             "install", str(make_artifact())], capture_output=True, text=True)
    assert result.returncode == 99
    assert "fail point before:ArtifactInstall" in result.stderr
    assert device.stored()["state"] == "ArtifactInstall"


def test_device_type_from_mender_device_type_file(device, make_artifact):
    device.settings["device_type"] = ""
    device.settings["device_type_file"] = str(device.root / "device_type")
    assert device.run("install", str(make_artifact())) == 1
    assert "no device type" in device.last_result()["error"]
    (device.root / "device_type").write_text("device_type=qemu-arm64\n")
    assert device.run("install", str(make_artifact())) == 0


def test_auto_reboot_and_the_rollback_reboot_run_the_reboot_command(device, make_artifact):
    """The reboot command ends the updater, as a real reboot would (here: SIGKILL)."""
    reboots = device.root / "reboots"
    device.settings["reboot_command"] = f"echo reboot >> {reboots}; kill -9 $PPID"
    device.settings["auto_reboot"] = True
    add_health_check(device, "10-fails", "exit 1")
    assert device.run("install", str(make_artifact())) == -9
    assert device.stored()["state"] == "ArtifactReboot"
    assert device.power_on() == "b"
    assert device.run("resume") == -9  # unhealthy: rolled back, rebooting
    assert device.stored()["state"] == "ArtifactRollbackReboot"
    assert device.power_on() == "a"
    assert device.run("resume") == 3
    assert reboots.read_text().split() == ["reboot", "reboot"]
    assert device.last_result()["status"] == "failure"


def test_a_cut_in_the_install_of_install_auto_reboot_reboots_at_resume(device, make_artifact):
    """The power goes in ArtifactInstall of `install --auto-reboot` (the slot is written):
    the boot's `resume`, whose config does not say auto_reboot, runs the install again and
    makes the reboot the command would have made, instead of leaving the trial pending."""
    reboots = device.root / "reboots"
    device.settings["reboot_command"] = f"echo reboot >> {reboots}; kill -9 $PPID"
    artifact = make_artifact(name="release-2")
    assert device.run("install", "--auto-reboot", str(artifact),
                      failpoints="before:ArtifactInstall") == 99
    assert device.stored()["state"] == "ArtifactInstall"
    assert device.power_on() == "a"
    assert device.run("resume") == -9  # the install again, then the reboot
    assert reboots.read_text().split() == ["reboot"]
    assert device.stored()["state"] == "ArtifactReboot"
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    assert device.env()["upgrade_available"] == "0"
    assert device.provides()["artifact_name"] == "release-2"

    # Without --auto-reboot, resume still waits for the user's reboot.
    assert device.run("install", str(make_artifact(name="release-3")),
                      failpoints="before:ArtifactInstall") == 99
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    assert device.stored()["state"] == "ArtifactReboot"
    assert reboots.read_text().split() == ["reboot"]


def test_one_updater_at_a_time(device, make_artifact, capfd):
    device.config.data.mkdir(parents=True, exist_ok=True)
    with open(device.config.data / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert device.run("install", str(make_artifact())) == 1
        assert "another tern-updater is running" in capfd.readouterr().err
    assert device.run("install", str(make_artifact())) == 0


def test_daemon_at_boot_resumes_first_in_its_own_process(device, make_artifact, monkeypatch,
                                                         capfd):
    monkeypatch.setattr(cli, "daemon", lambda config: 0)  # the server loop: not here
    assert device.run("install", str(make_artifact(name="release-2"))) == 0
    assert device.power_on() == "b"
    assert device.run("daemon", "--at-boot") == 0
    assert "release-2: installed and committed" in capfd.readouterr().out
    assert device.env()["upgrade_available"] == "0"
    assert device.run("daemon", "--at-boot") == 0
    assert "no update in progress" in capfd.readouterr().out  # resume's outcome
    assert device.run("daemon") == 0
    assert "no update in progress" not in capfd.readouterr().out  # without --at-boot: none


def test_daemon_with_a_bootloader_it_cannot_make_stops_at_start(device, capfd, monkeypatch):
    """The daemon makes the bootloader only when a deployment begins; a wrong setting still
    stops it at start, in one line, before its loop."""
    from updater.agent.daemon import Daemon

    monkeypatch.setattr(Daemon, "run", lambda self: print("polling"))
    device.settings["server_url"] = "https://127.0.0.1:9"
    device.settings["bootloader"] = "grub"
    assert device.run("daemon") == 1
    assert capfd.readouterr().err.strip().splitlines() == [
        "tern-updater: unknown bootloader 'grub'; known: file, uboot"]
