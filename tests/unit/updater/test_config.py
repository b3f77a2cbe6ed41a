"""Configuration: defaults, TOML, flags; a flag for every setting."""
import argparse
from dataclasses import fields

import pytest

from updater import config as config_module
from updater.config import Config


def parse(argv):
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)
    return config_module.load(parser.parse_args(argv))


def test_every_setting_has_a_flag():
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)
    destinations = {action.dest for action in parser._actions}
    assert {item.name for item in fields(Config)} <= destinations


def test_toml_then_flags(tmp_path):
    (tmp_path / "t.toml").write_text('data_dir = "/d"\nverify_keys = ["/k1"]\n'
                                     'bootloader = "file"\nhealth_timeout = 5\n')
    config = parse(["--config", str(tmp_path / "t.toml"), "--bootloader", "uboot",
                    "--verify-key", "/k2", "--verify-key", "/k3", "--no-verify-readback"])
    assert config.data_dir == "/d" and config.bootloader == "uboot"
    assert config.verify_keys == ["/k2", "/k3"]  # flags replace the file's list
    assert config.health_timeout == 5 and config.verify_readback is False


def test_issue_flags_exist():
    config = parse(["--data-dir", "/x", "--bootloader", "file", "--bootloader-env", "/e",
                    "--rootfs-a", "/dev/a2", "--rootfs-b", "/dev/a3", "--device-type", "t",
                    "--verify-key", "/k"])
    assert (config.data_dir, config.bootloader_env, config.rootfs_a, config.rootfs_b,
            config.device_type, config.verify_keys) == ("/x", "/e", "/dev/a2", "/dev/a3", "t",
                                                         ["/k"])


def test_unknown_setting(tmp_path):
    (tmp_path / "t.toml").write_text('colour = "blue"\n')
    with pytest.raises(ValueError, match="unknown settings colour"):
        parse(["--config", str(tmp_path / "t.toml")])
