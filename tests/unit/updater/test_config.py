"""Configuration: defaults, TOML, flags; a flag for every setting."""
import argparse
from dataclasses import fields
from pathlib import Path

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


@pytest.mark.parametrize("text, message", [
    ('sever_url = "https://ota.example.com"\n', "unknown key 'sever_url'"),
    ('poll_interval = "60"\n', "poll_interval must be a number, not '60'"),
    ("max_store_count = 2.5\n", "max_store_count must be an integer, not 2.5"),
    ("max_store_count = true\n", "max_store_count must be an integer, not True"),
    ("verify_readback = 1\n", "verify_readback must be true or false, not 1"),
    ('verify_keys = "/k"\n', "verify_keys must be a list of strings, not '/k'"),
    ("verify_keys = [1]\n", "verify_keys must be a list of strings, not [1]"),
    ("data_dir = /d\n", "not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    (tmp_path / "t.toml").write_text(text)
    with pytest.raises(config_module.ConfigError) as error:
        parse(["--config", str(tmp_path / "t.toml")])
    assert str(error.value).startswith(f"{tmp_path / 't.toml'}: {message}")
    assert "\n" not in str(error.value)


def test_a_missing_file(tmp_path):
    with pytest.raises(config_module.ConfigError, match=r"/nowhere.toml: no such file$"):
        parse(["--config", str(tmp_path / "nowhere.toml")])


def test_an_integer_where_a_number_is_expected_is_a_float(tmp_path):
    (tmp_path / "t.toml").write_text("poll_interval = 60\n")
    poll_interval = parse(["--config", str(tmp_path / "t.toml")]).poll_interval
    assert poll_interval == 60 and type(poll_interval) is float


@pytest.mark.parametrize("path", ["debian/updater.toml", "images/rootfs/etc/tern/updater.toml",
                                  "updater/examples/tern.toml"])
def test_the_shipped_settings_files_use_known_keys_of_the_right_types(path):
    root = Path(__file__).parents[3]
    assert config_module.read_file(str(root / path))
