"""What must never cost a healthy update or its record: a chatty health check or state
script, a command typed during the trial boot, the reboot's SIGTERM, a power cut in the
middle of the updater's own log."""
import fcntl
import json
import os
import subprocess
import sys
import time

from testkit.host_device import add_health_check
from updater.agent.logcap import CUT
from updater.synclog import SyncedLog

MIB = 1024 * 1024


def test_a_chatty_health_check_keeps_head_and_tail_of_its_output(device, make_artifact):
    add_health_check(device, "10-chatty", "echo first line; yes 'all is well' | head -c 5000000; "
                                          "echo; echo last line")
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"
    assert device.run("resume") == 0  # a full pipe must not block the check: no timeout
    result = device.last_result()
    assert result["status"] == "success"
    limit = device.config.deployment_log_limit
    assert len(json.dumps(result["log"])) <= limit
    assert len((device.config.data / "state.json").read_bytes()) < 2 * limit
    health = [line["message"] for line in result["log"] if "10-chatty" in line["message"]]
    assert health[0].startswith("health: 10-chatty: pass: first line")
    assert health[0].endswith("last line")
    assert " bytes (" in health[0] and "lines) cut ...]" in health[0]


def test_many_chatty_outputs_keep_the_log_capped(device, make_artifact):
    device.settings["deployment_log_limit"] = 20_000
    scripts = device.root / "scripts"
    scripts.mkdir()
    for action in ("Enter", "Leave"):
        script = scripts / f"Download_{action}_00"
        script.write_text(f"#!/bin/sh\necho Download_{action}; seq 100000\n")
        script.chmod(0o755)
    for number in range(10, 20):
        add_health_check(device, f"{number}-chatty", "seq 100000")
    assert device.run("install", str(make_artifact(name="release-2"))) == 0
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    log = device.last_result()["log"]
    assert len(json.dumps(log)) <= 20_000
    assert log[0]["message"].startswith("Download_Enter_00: Download_Enter")
    assert log[-1]["message"] == "release-2: committed"
    cuts = [line for line in log if CUT.fullmatch(line["message"])]
    assert len(cuts) == 1 and cuts[0]["level"] == "warning"


def hold_lock(device, seconds: float) -> subprocess.Popen:
    """Another process holds the updater's lock for `seconds` (as a command typed at boot)."""
    device.config.data.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"lock = open({str(device.config.data / 'lock')!r}, 'w')\n"
         "fcntl.flock(lock, fcntl.LOCK_EX)\nprint('held', flush=True)\n"
         f"time.sleep({seconds})"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_resume_waits_for_a_held_lock_and_commits(device, make_artifact):
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"
    holder = hold_lock(device, 1.5)
    started = time.monotonic()
    assert device.run("resume") == 0
    assert time.monotonic() - started >= 1.0
    holder.wait()
    assert device.stored()["state"] == "Idle"
    assert device.last_result()["status"] == "success"
    assert device.env()["upgrade_available"] == "0"


def test_resume_gives_up_after_its_wait(device, make_artifact, capfd):
    device.settings["resume_lock_wait"] = 0.5
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"
    holder = hold_lock(device, 30)
    try:
        started = time.monotonic()
        assert device.run("resume") == 1
        assert 0.5 <= time.monotonic() - started < 5
        assert "another tern-updater is running" in capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_a_command_typed_during_the_trial_boot_refuses_at_once(device, make_artifact, capfd):
    """While resume holds the lock, a user's install refuses without waiting; typed before
    it, it refuses (an update is in progress) and resume still commits."""
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"
    with open(device.config.data / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # resume at work
        started = time.monotonic()
        assert device.run("install", str(make_artifact())) == 1
        assert time.monotonic() - started < 5
    assert "another tern-updater is running" in capfd.readouterr().err
    assert device.run("install", str(make_artifact())) == 1
    assert "an update is in progress" in capfd.readouterr().err
    assert device.run("resume") == 0
    assert device.last_result()["status"] == "success"


def test_auto_reboot_exits_0_when_the_shutdown_stops_it(device, make_artifact):
    """busybox `reboot` only asks init, whose shutdown then sends SIGTERM to every
    process: the new slot is set, the reboot requested; that is a success."""
    device.settings["reboot_command"] = "kill -TERM $PPID"  # the shutdown's SIGTERM
    result = subprocess.run([sys.executable, "-m", "updater.cli", "--config", str(device.toml),
                             "install", "--auto-reboot", str(make_artifact())],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stopped by the reboot" in result.stderr
    assert device.stored()["state"] == "ArtifactReboot"
    assert device.env()["mender_boot_part"] == "3"


def test_the_log_file_gets_whole_lines_each_synced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_size))
    log = SyncedLog(str(tmp_path / "updater.log"))
    log.write("one")
    assert synced == [] and (tmp_path / "updater.log").read_text() == ""
    log.write(" line\ntwo ")
    assert (tmp_path / "updater.log").read_text() == "one line\n"
    assert synced == [9]  # synced once the line is written
    log.write("lines\nthree\n")
    log.write("partial")
    log.flush()
    assert (tmp_path / "updater.log").read_text() == "one line\ntwo lines\nthree\npartial"
    assert synced == [9, 25, 32]


def test_the_cli_logs_to_its_file_appending(device, tmp_path):
    path = tmp_path / "updater.log"
    path.write_text("before\n")
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "updater.cli", "--config",
                                 str(device.toml), "--log", str(path), "resume"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stdout == result.stderr == ""
    assert path.read_text() == "before\nno update in progress\nno update in progress\n"


def test_resume_keeps_the_watchdog_fed_while_it_waits_for_the_lock(device, make_artifact):
    """The initramfs's watchdog would reset the board during a long wait: a healthy update
    would then roll back for a command typed at boot."""
    watchdog = device.root / "watchdog"  # a regular file records what /dev/watchdog gets
    watchdog.write_bytes(b"")
    device.settings["watchdog_device"] = str(watchdog)
    assert device.run("install", str(make_artifact())) == 0
    assert device.power_on() == "b"
    holder = hold_lock(device, 1.5)
    assert device.run("resume") == 0
    holder.wait()
    fed = watchdog.read_bytes()
    assert fed.endswith(b"V") and fed.count(b"\0") >= 5, fed  # fed every 0.2 s of the wait
    assert device.last_result()["status"] == "success"
