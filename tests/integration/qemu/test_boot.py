"""Booting the factory image: slot A, the environment U-Boot used, power control, network."""
import time

import pexpect
import pytest

import updater
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
