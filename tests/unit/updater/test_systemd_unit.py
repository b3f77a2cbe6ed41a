"""The systemd units, read as systemd's INI dialect: the daemon starts the console script
after the network is online, restarts it on failure and keeps its state on /data; the resume
unit runs once per boot, once /data is mounted."""
import argparse
import configparser
import shlex
import tomllib
from pathlib import Path

from updater import config

ROOT = Path(__file__).parents[3]


def test_the_daemon_unit_runs_the_console_script_with_its_state_on_data():
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read(ROOT / "updater/systemd/tern-updater.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] == "/usr/bin/tern-updater" and scripts["tern-updater"] == "updater.cli:main"
    assert argv[-1] == "daemon"
    assert unit["Unit"]["RequiresMountsFor"] == "/data"
    assert "network-online.target" in unit["Unit"]["After"].split()
    assert "network-online.target" in unit["Unit"]["Wants"].split()
    assert unit["Service"]["Restart"] == "on-failure"
    # sd_notify: READY=1, then WATCHDOG=1 from the loop (updater/notify.py)
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["WatchdogSec"] == "10min"
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    options = argv[1:-1]
    options[options.index("--config") + 1] = str(ROOT / "debian/updater.toml")  # the conffile
    assert config.load(parser.parse_args(options)).data.is_relative_to("/data")


def test_the_resume_unit_runs_once_per_boot_with_the_conffile_after_data_is_mounted():
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "updater/systemd/tern-updater-resume.service")
    assert shlex.split(unit["Service"]["ExecStart"]) == [
        "/usr/bin/tern-updater", "--config", "/etc/tern/updater.toml", "resume"]
    assert unit["Service"]["Type"] == "oneshot"
    # nothing to resume; an update that failed and was rolled back (a normal outcome)
    assert unit["Service"]["SuccessExitStatus"].split() == ["2", "3"]
    assert unit["Unit"]["RequiresMountsFor"] == "/data"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    daemon = configparser.ConfigParser(interpolation=None)
    daemon.optionxform = str
    daemon.read(ROOT / "updater/systemd/tern-updater.service")
    assert "tern-updater-resume.service" in daemon["Unit"]["After"].split()
    assert "tern-updater.service" in unit["Unit"]["Before"].split()
