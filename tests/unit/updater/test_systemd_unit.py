"""The daemon's systemd unit, read as systemd's INI dialect: it starts the console script
after the network is online, restarts it on failure and keeps its state on /data."""
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
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    options = argv[1:-1]
    options[options.index("--config") + 1] = str(ROOT / "debian/updater.toml")  # the conffile
    assert config.load(parser.parse_args(options)).data.is_relative_to("/data")
