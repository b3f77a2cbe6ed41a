"""Telling the running slot: root= on the command line, cross-checked with what is mounted
on / (a device node made with the same number stands in for the device of /)."""
import os
import stat

import pytest

from updater.config import Config
from updater.install.slots import SlotError, running_slot


@pytest.fixture
def slots(tmp_path):
    root_node = tmp_path / "root-device"
    os.mknod(root_node, stat.S_IFBLK | 0o600, os.stat("/").st_dev)
    other = tmp_path / "other-slot3"
    other.write_bytes(b"")

    def config(cmdline: str, a: str, b: str) -> Config:
        (tmp_path / "cmdline").write_text(cmdline + "\n")
        return Config(cmdline_file=str(tmp_path / "cmdline"), rootfs_a=a, rootfs_b=b)

    return config, str(root_node), str(other)


def test_root_on_the_command_line(slots):
    config, _, other = slots
    assert running_slot(config(f"quiet root={other} rw", "/dev/nowhere2", other)) == "b"


def test_without_root_the_mounted_device_tells(slots):
    config, root_node, other = slots
    assert running_slot(config("console=ttyAMA0", other, root_node)) == "b"
    assert running_slot(config("root=PARTUUID=1234-02", root_node, other)) == "a"


def test_command_line_contradicted_by_the_mounted_root(slots):
    config, root_node, other = slots
    with pytest.raises(SlotError, match="but / is mounted from"):
        running_slot(config(f"root={other}", other, root_node))


def test_neither_slot(slots):
    config, _, other = slots
    with pytest.raises(SlotError, match="mounted from neither slot"):
        running_slot(config("quiet", other, "/dev/nowhere3"))
    with pytest.raises(SlotError, match="is neither slot"):
        running_slot(config("root=/dev/sdz1", other, "/dev/nowhere3"))
