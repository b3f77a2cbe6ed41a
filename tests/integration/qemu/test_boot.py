"""Booting the factory image: slot A, the environment U-Boot used, power control, network,
/data."""
import hashlib
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

import updater
from qemu.device import make_overlay
from qemu.guest import fw_env, release, uboot_choices
from testkit.http_files import serve_directory

pytestmark = pytest.mark.qemu


def test_boots_slot_a_and_linux_sees_the_environment_uboot_used(shell):
    assert shell.slot == "A"
    assert shell.run_check("cat /run/tern-slot").strip() == "A"
    assert "root=/dev/vda2" in shell.run_check("cat /proc/cmdline")
    assert release(shell) == "release-1"
    env = fw_env(shell)
    part, upgrade, bootcount = uboot_choices(shell)[-1]
    assert (env["mender_boot_part"], env["upgrade_available"], env["bootcount"]) == (
        part, upgrade, bootcount) == ("2", "0", "0")
    assert env["bootlimit"] == "1"


def test_uboot_is_debians_and_boots_the_shell_from_its_prompt(uboot):
    assert "U-Boot 2023.01+dfsg" in uboot.uboot_run("version")
    assert "boot.scr" in uboot.uboot_run("fatls virtio 0:1")
    uboot.transition("shell")
    assert uboot.slot == "A"


def test_updater_runtime_is_on_the_device(shell):
    # The agent comes from its package: in its private directory, not in site-packages.
    output = shell.run_check(
        "python3 -c 'import sys; sys.path.insert(0, \"/usr/lib/tern-updater\"); "
        "import artifact, updater, cryptography, ssl; print(updater.__file__)'",
        timeout=60)
    assert output.strip() == "/usr/lib/tern-updater/updater/__init__.py"
    # The device speaks HTTP with the standard library: requests is not even installed.
    output, code = shell.run("python3 -c 'import requests'", timeout=60)
    assert code == 1 and "ModuleNotFoundError" in output
    output, code = shell.run("python3 -c 'import updater'", timeout=60)
    assert code == 1 and "ModuleNotFoundError" in output
    assert "usage:" in shell.run_check("tern-updater --help", timeout=60)
    assert shell.run_check("tern-updater --version", timeout=60).strip() == (
        f"tern-updater {updater.__version__}")
    assert shell.run_check("ls /etc/tern/health.d").split() == ["10-data-mounted"]
    shell.run_check("for check in /etc/tern/health.d/*; do $check || exit 1; done")


def test_tls_offers_chacha20_first_as_a_board_without_aes_instructions(shell):
    """The image's openssl.cnf, read through OpenSSL's default path (docs/porting.md):
    the agent's TLS 1.3 contexts list ChaCha20-Poly1305 first."""
    output = shell.run_check(
        "python3 -c 'import ssl; print(ssl.create_default_context().get_ciphers()[0][\"name\"])'",
        timeout=60)
    assert output.strip() == "TLS_CHACHA20_POLY1305_SHA256"


def test_ssh_with_fabric(shell):
    shell.run_check(  # the forwarded port reaches the guest once DHCP gave eth0 its address
        "for i in $(seq 30); do ip -4 addr show eth0 | grep -q inet && exit 0; sleep 1; done; "
        "exit 1", timeout=60)
    with shell.ssh() as connection:
        result = connection.run("cat /run/tern-slot /etc/tern-release", hide=True, timeout=60,
                                   in_stream=False)
    assert result.stdout.split() == ["A", "release-1"]


def test_qmp_stop_continue_and_reset(shell):
    shell.stop()
    shell.console.sendline("echo 'still''running'")
    with pytest.raises(pexpect.TIMEOUT):  # a stopped CPU answers nothing
        shell.console.expect("stillrunning", time.monotonic() + 3)
    shell.cont()
    shell.console.expect("stillrunning", time.monotonic() + 30)
    shell.reset()
    assert shell.expect_reboot() == "A"
    assert float(shell.run_check("cat /proc/uptime").split()[0]) < 30  # a fresh kernel


def test_guest_reaches_the_host_at_10_0_2_2_also_when_the_network_was_down_at_boot(
        uboot, tmp_path):
    """rcS's DHCP client keeps trying: a device that boots while the network does not
    answer gets its lease once it does (one that gave up stayed unreachable until its next
    boot, its updater unable to report: seen once in a 200-cut campaign)."""
    uboot.qmp.execute("set_link", name="net0", up=False)
    uboot.transition("shell")
    uboot.run_check("sleep 20", timeout=60)  # past udhcpc's first 5 tries of 3 s
    assert "inet " not in uboot.run_check("ip -4 addr show eth0")
    uboot.qmp.execute("set_link", name="net0", up=True)
    uboot.run_check(  # udhcpc's next round (within 5 s of pause and 15 s of tries) has it
        "for i in $(seq 40); do ip -4 addr show eth0 | grep -q inet && exit 0; sleep 1; done;"
        " exit 1", timeout=60)
    (tmp_path / "hello.txt").write_text("hello from the host\n")
    with serve_directory(tmp_path) as base:
        output = uboot.run_check(f"wget -q -O - {base}/hello.txt", timeout=30)
    assert output == "hello from the host\n"


JOURNALED = bytes(range(256)) * 8  # two 1 KiB blocks, each transaction's


def torn_data(image, tmp_path, before: bytes, torn: str) -> Path:
    """A disk whose /data holds `before` in /before-update and, in its journal, two
    transactions left to replay (each writes JOURNALED to two blocks: 30000-30001, then
    30002-30003); then, as the flush-point replay found a power cut can leave it
    (RELIABILITY.md), torn after its first sector: the second transaction's commit block
    (`torn="commit"`), or the superblock, which ext4 writes in place at each mount
    (`torn="superblock"`)."""
    data = image.layout["partitions"]["data"]
    partition = tmp_path / "data.ext4"
    with open(image.disk, "rb") as disk, open(partition, "wb") as out:
        disk.seek(data["offset"])
        out.write(disk.read(data["size"]))
    (tmp_path / "before").write_bytes(before)
    (tmp_path / "blocks").write_bytes(JOURNALED)
    subprocess.run(["debugfs", "-w", "-f", "-", str(partition)], check=True, capture_output=True,
                   cwd=tmp_path, text=True, input="write before before-update\njo -c -v 3\n"
                   "jw -b 30000,30001 blocks\njw -b 30002,30003 blocks\njc\n")
    logdump = subprocess.run(["debugfs", "-R", "logdump", str(partition)], check=True,
                             capture_output=True, text=True).stdout
    assert "sequence 2, type 2 (commit block) at block 8" in logdump
    if torn == "commit":
        block = int(subprocess.run(["debugfs", "-R", "bmap <8> 8", str(partition)], check=True,
                                   capture_output=True, text=True).stdout)
    else:
        block = 1  # the superblock: 1 KiB at byte 1024 (a 1 KiB-block file system)
    with open(partition, "r+b") as out:  # its second sector as a cache could leave it
        out.seek(block * 1024 + 512)
        out.write(b"\xa5" * 512)
    disk = make_overlay(image.disk, tmp_path / "torn.qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    f"write -q -s {partition} {data['offset']} {data['size']}", str(disk)],
                   check=True, capture_output=True)
    return disk


def data_mounted_intact(device, before: bytes) -> None:
    device.transition("shell")
    assert " /data ext4 " in device.run_check("cat /proc/mounts")
    output = device.run_check("sha256sum /data/before-update")
    assert output.split()[0] == hashlib.sha256(before).hexdigest()


def test_data_whose_last_journal_commit_is_torn_is_checked_then_mounted_intact(
        make_device, base_image, tmp_path):
    """The kernel refuses such a /data ("Structure needs cleaning"); rcS checks it first
    (e2fsck -p drops the torn transaction), so it mounts with all written before."""
    before = hashlib.sha256(b"tern").digest() * 2048
    device = make_device(disk=torn_data(base_image, tmp_path, before, torn="commit"))
    data_mounted_intact(device, before)
    assert "Journal transaction 2 was corrupt" in device.log_path.read_text(errors="replace")


def test_data_whose_superblock_is_torn_is_repaired_from_a_backup_with_its_journal(
        make_device, base_image, tmp_path):
    """Neither the kernel nor e2fsck -p opens such a /data; rcS then runs e2fsck -y, which
    takes a backup superblock and still replays the journal: nothing written is lost."""
    before = hashlib.sha256(b"tern").digest() * 2048
    device = make_device(disk=torn_data(base_image, tmp_path, before, torn="superblock"))
    data_mounted_intact(device, before)
    console = device.log_path.read_text(errors="replace")
    assert "Superblock invalid, trying backup blocks" in console
    assert "running journal anyway" in console
    output = device.run_check("dd if=/dev/vda4 bs=1024 skip=30000 count=4 2>/dev/null | sha256sum")
    assert output.split()[0] == hashlib.sha256(JOURNALED * 2).hexdigest()  # both transactions
