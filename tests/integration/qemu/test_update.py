"""A/B updates from the device shell: trial, commit, rollback."""
import pytest

from qemu.guest import (
    COMMIT,
    TRIAL_B,
    data_marker,
    fw_env,
    fw_setenv,
    install_to_b,
    put_data_marker,
    release,
    uboot_choices,
)

pytestmark = pytest.mark.qemu


def test_update_to_b_then_commit(make_device, base_image):
    device = make_device(extra_disks=[base_image.release("release-2")])
    device.transition("shell")
    put_data_marker(device)
    install_to_b(device)
    device.console.sendline("reboot")
    assert device.expect_reboot() == "B"
    assert release(device) == "release-2"
    env = fw_env(device)
    assert (env["mender_boot_part"], env["upgrade_available"], env["bootcount"]) == ("3", "1", "1")
    # U-Boot counted the trial boot in the other copy than the one fw_setenv wrote last.
    blocks = [hex(offset // 512) for offset in base_image.layout["env"]["offsets"]]
    assert f"tern: wrote env copy at block {blocks[0]} flag 3" in device.log_path.read_text()

    fw_setenv(device, COMMIT)
    device.console.sendline("reboot")
    assert device.expect_reboot() == "B"
    assert release(device) == "release-2"
    assert uboot_choices(device)[-1] == ("3", "0", "0")
    assert data_marker(device) == "survives"


def test_broken_update_rolls_back_to_a_within_bootlimit(make_device, base_image):
    device = make_device(extra_disks=[base_image.release("release-broken")])
    device.transition("shell")
    put_data_marker(device)
    install_to_b(device)
    device.console.sendline("reboot")
    assert device.expect_reboot(timeout=150) == "A"
    log = device.log_path.read_text()
    assert "Kernel panic" in log
    assert "tern: bootcount 2 > bootlimit 1: rollback" in log
    assert uboot_choices(device)[-2:] == [("3", "1", "1"), ("2", "0", "0")]
    env = fw_env(device)
    assert (env["mender_boot_part"], env["upgrade_available"]) == ("2", "0")
    assert release(device) == "release-1"
    assert data_marker(device) == "survives"


def test_uncommitted_unhealthy_update_rolls_back_on_next_reboot(make_device, base_image):
    device = make_device(extra_disks=[base_image.release("release-unhealthy")])
    device.transition("shell")
    put_data_marker(device)
    install_to_b(device)
    device.console.sendline("reboot")
    assert device.expect_reboot() == "B"
    assert release(device) == "release-unhealthy"
    _, code = device.run("for check in /etc/tern/health.d/*; do $check || exit 1; done")
    assert code == 1
    device.console.sendline("reboot")  # not committed: the next boot is over bootlimit
    assert device.expect_reboot() == "A"
    assert release(device) == "release-1"
    assert data_marker(device) == "survives"


def test_unloadable_slot_makes_uboot_reset_and_roll_back(shell):
    put_data_marker(shell)
    shell.run_check("dd if=/dev/zero of=/dev/vda3 bs=1M count=8 conv=fsync 2>/dev/null")
    fw_setenv(shell, TRIAL_B)
    shell.console.sendline("reboot")
    assert shell.expect_reboot(timeout=150) == "A"
    log = shell.log_path.read_text()
    assert "tern: boot of partition 3 failed, resetting" in log  # not the `=>` prompt
    assert "tern: bootcount 2 > bootlimit 1: rollback" in log
    assert fw_env(shell)["mender_boot_part"] == "2"
    assert data_marker(shell) == "survives"
