"""Mender-compatible state scripts: order, failures, exit 21 (retry later)."""
from pathlib import Path

from testkit.host_device import add_health_check


def recording_script(log: Path, name: str, exit_code: int = 0) -> bytes:
    return f"#!/bin/sh\necho {name} >> {log}\nexit {exit_code}\n".encode()


def test_scripts_run_in_mender_order(device, make_artifact, tmp_path):
    log = tmp_path / "scripts.log"
    names = ["ArtifactInstall_Enter_01", "ArtifactInstall_Enter_02_second",
             "ArtifactInstall_Leave_01", "ArtifactReboot_Enter_01", "ArtifactReboot_Leave_01",
             "ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01", "ArtifactRollback_Enter_01"]
    rootfs_scripts = Path(device.settings["scripts_dir"])
    rootfs_scripts.mkdir()
    for name in ("Download_Enter_01", "Download_Leave_01"):
        (rootfs_scripts / name).write_bytes(recording_script(log, name))
        (rootfs_scripts / name).chmod(0o755)
    artifact = make_artifact(scripts={n: recording_script(log, n) for n in names})
    assert device.run("install", str(artifact)) == 0
    device.power_on()
    assert device.run("resume") == 0
    assert log.read_text().split() == [
        "Download_Enter_01", "Download_Leave_01", "ArtifactInstall_Enter_01",
        "ArtifactInstall_Enter_02_second", "ArtifactInstall_Leave_01", "ArtifactReboot_Enter_01",
        "ArtifactReboot_Leave_01", "ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]
    assert not (device.config.data / "scripts").exists()  # cleaned up


def test_failing_enter_script_rolls_back_and_runs_error_scripts(device, make_artifact, tmp_path):
    log = tmp_path / "scripts.log"
    scripts = {"ArtifactInstall_Enter_01": recording_script(log, "install-enter", 1),
               "ArtifactInstall_Error_01": recording_script(log, "install-error"),
               "ArtifactRollback_Enter_01": recording_script(log, "rollback-enter", 1),
               "ArtifactFailure_Enter_01": recording_script(log, "failure-enter")}
    assert device.run("install", str(make_artifact(scripts=scripts))) == 1
    assert log.read_text().split() == ["install-enter", "install-error", "rollback-enter",
                                       "failure-enter"]
    assert device.env()["upgrade_available"] == "0"
    assert "ArtifactInstall_Enter_01: exit 1" in device.last_result()["error"]


def test_exit_21_retries_until_the_script_succeeds(device, make_artifact, tmp_path):
    counter = tmp_path / "tries"
    script = (f"#!/bin/sh\necho x >> {counter}\n"
              f"test $(wc -l < {counter}) -ge 3 && exit 0\nexit 21\n").encode()
    assert device.run("install", str(make_artifact(
        scripts={"ArtifactInstall_Enter_01": script}))) == 0
    assert len(counter.read_text().split()) == 3


def test_exit_21_gives_up_after_the_retry_timeout(device, make_artifact, tmp_path):
    device.settings["state_script_retry_timeout"] = 0.3
    script = b"#!/bin/sh\nexit 21\n"
    assert device.run("install", str(make_artifact(
        scripts={"ArtifactCommit_Enter_01": script}))) == 0
    add_health_check(device, "10-ok", "true")
    device.power_on()
    assert device.run("resume") == 1  # the commit was refused: back to slot a
    assert device.env()["mender_boot_part"] == "2"
    assert device.power_on() == "a"
    assert device.run("resume") == 3
    assert "exit 21" in device.last_result()["error"]


def test_script_timeout(device, make_artifact):
    device.settings["state_script_timeout"] = 0.3
    assert device.run("install", str(make_artifact(
        scripts={"ArtifactInstall_Enter_01": b"#!/bin/sh\nsleep 5\n"}))) == 1
    assert "timed out" in device.last_result()["error"]

