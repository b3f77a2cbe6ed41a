"""The Python U-Boot environment against libubootenv's own fw_printenv/fw_setenv."""
import struct
import subprocess
import zlib

import pytest

from updater.bootloader.base import BootloaderError
from updater.bootloader.uboot import UBootBootloader, UBootEnv, read_fw_env_config

SIZE = 0x4000


@pytest.fixture
def fw_config(tmp_path):
    """Two redundant copies in regular files, as the image's fw_env.config has on /dev/vda."""
    for name in ("uboot.env", "uboot-redund.env"):
        (tmp_path / name).write_bytes(b"\0" * SIZE)
    config = tmp_path / "fw_env.config"
    config.write_text(f"# device offset size\n{tmp_path}/uboot.env 0x0 {SIZE:#x}\n"
                      f"{tmp_path}/uboot-redund.env 0x0 {SIZE:#x}\n")
    (tmp_path / "defenv").write_text("bootlimit=1\n")
    return config


def fw_setenv(config, *args):
    subprocess.run(["fw_setenv", "-c", config, "-f", config.parent / "defenv", *args],
                   check=True, capture_output=True)


def fw_printenv(config) -> dict[str, str]:
    out = subprocess.run(["fw_printenv", "-c", config, "-f", config.parent / "defenv"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def env(config) -> UBootEnv:
    return UBootEnv(read_fw_env_config(config))


def copy_flags(config) -> list[int]:
    return [(config.parent / n).read_bytes()[4] for n in ("uboot.env", "uboot-redund.env")]


def test_reads_what_fw_setenv_wrote_across_alternating_copies(fw_config):
    for count in range(5):
        fw_setenv(fw_config, "mender_boot_part", str(2 + count % 2))
        fw_setenv(fw_config, "bootcount", str(count))
        assert env(fw_config).read() == fw_printenv(fw_config)
        assert env(fw_config).read()["bootcount"] == str(count)


def test_fw_printenv_reads_what_python_wrote_and_copies_alternate(fw_config):
    env(fw_config).write({"mender_boot_part": "2", "upgrade_available": "0"})
    flags = [copy_flags(fw_config)]
    env(fw_config).write({"mender_boot_part": "3", "upgrade_available": "1"})
    flags.append(copy_flags(fw_config))
    env(fw_config).write({"bootcount": "1"})
    flags.append(copy_flags(fw_config))
    assert fw_printenv(fw_config) == {"mender_boot_part": "3", "upgrade_available": "1",
                                      "bootcount": "1"}
    assert flags == [[1, 0], [1, 2], [3, 2]]


def test_mixed_writers_keep_one_history(fw_config):
    fw_setenv(fw_config, "a", "1")
    env(fw_config).write({"b": "2"})
    fw_setenv(fw_config, "c", "3")
    env(fw_config).write({"a": None})
    # fw_setenv started from its default environment (bootlimit=1)
    assert fw_printenv(fw_config) == {"bootlimit": "1", "b": "2", "c": "3"} == env(fw_config).read()


def test_torn_newest_copy_falls_back_to_the_previous_one_like_fw_printenv(fw_config):
    env(fw_config).write({"mender_boot_part": "2"})
    env(fw_config).write({"mender_boot_part": "3"})  # copy 2, flag 2
    redund = fw_config.parent / "uboot-redund.env"
    raw = bytearray(redund.read_bytes())
    raw[100:118] = b"x" * 18
    redund.write_bytes(raw)
    assert env(fw_config).read() == fw_printenv(fw_config) == {"mender_boot_part": "2"}


def test_flag_wrap_255_to_0_makes_0_the_newer(fw_config):
    for name, flag, value in (("uboot.env", 255, "old"), ("uboot-redund.env", 0, "new")):
        data = f"v={value}\0\0".encode().ljust(SIZE - 5, b"\0")
        (fw_config.parent / name).write_bytes(
            struct.pack("<I", zlib.crc32(data)) + bytes([flag]) + data)
    assert env(fw_config).read() == fw_printenv(fw_config) == {"v": "new"}
    env(fw_config).write({"v": "newest"})
    assert copy_flags(fw_config) == [1, 0]
    assert fw_printenv(fw_config) == {"v": "newest"}


def test_single_copy_config(tmp_path):
    (tmp_path / "uboot.env").write_bytes(b"\0" * SIZE)
    config = tmp_path / "fw_env.config"
    config.write_text(f"{tmp_path}/uboot.env 0x0 0x4000\n")
    (tmp_path / "defenv").write_text("x=1\n")
    env(config).write({"mender_boot_part": "3"})
    assert fw_printenv(config) == {"mender_boot_part": "3"}
    fw_setenv(config, "bootcount", "2")
    assert env(config).read() == {"mender_boot_part": "3", "bootcount": "2"}


def test_env_at_an_offset_inside_a_disk_image(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xaa" * (1 << 20))
    config = tmp_path / "fw_env.config"
    config.write_text(f"{disk} 0x40000 0x4000\n{disk} 0x80000 0x4000\n")
    (tmp_path / "defenv").write_text("x=1\n")
    env(config).write({"mender_boot_part": "2"})
    fw_setenv(config, "upgrade_available", "1")
    assert env(config).read() == {"mender_boot_part": "2", "upgrade_available": "1"}
    raw = disk.read_bytes()
    assert raw[:0x40000] == b"\xaa" * 0x40000 and raw[0x84000:] == b"\xaa" * (len(raw) - 0x84000)


def test_mender_variables_through_the_tools(fw_config):
    boot = UBootBootloader(env(fw_config), {"a": "2", "b": "3"})
    fw_setenv(fw_config, "mender_boot_part", "2")
    assert boot.boot_slot() == "a" and not boot.trial_pending()
    boot.set_trial("b")
    assert fw_printenv(fw_config) == {"bootlimit": "1", "mender_boot_part": "3",
                                      "mender_boot_part_hex": "3", "upgrade_available": "1",
                                      "bootcount": "0"}
    assert boot.trial_pending() and boot.boot_slot() == "b"
    boot.commit()
    assert fw_printenv(fw_config)["upgrade_available"] == "0"
    boot.set_trial("a")
    boot.rollback("b")
    boot.rollback("b")
    assert fw_printenv(fw_config)["mender_boot_part"] == "3" and not boot.trial_pending()


def test_unknown_boot_part_is_an_error(fw_config):
    fw_setenv(fw_config, "mender_boot_part", "7")
    with pytest.raises(BootloaderError, match="names neither slot"):
        UBootBootloader(env(fw_config), {"a": "2", "b": "3"}).boot_slot()
