"""The updater on the emulated device, from a user's install to the commit at boot:
`install --auto-reboot` exits 0 once the reboot is requested, the reboot unmounts /data
cleanly (processes stopped first), a command typed during the trial boot does not cost the
commit, a power cut after the commit leaves the updater's log whole up to its last
lines, without NUL bytes; and a power cut in the install of an `install --auto-reboot`
ends committed on the new slot, without a key pressed."""
import time

import pytest

from qemu.guest import fw_env
from testkit.http_files import serve_directory

pytestmark = pytest.mark.qemu

CONFIG = "/etc/tern/updater.toml"


@pytest.fixture
def releases(base_image):
    """The build's artifacts over HTTP, at http://10.0.2.2:PORT/ for the device."""
    with serve_directory(base_image.directory) as url:
        yield url


def wait_until(device, command: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while device.run(command, timeout=60)[1] != 0:
        assert time.monotonic() < deadline, f"never true: {command}"
        time.sleep(2)


def test_auto_reboot_clean_shutdown_and_the_log_after_a_power_cut(make_device, releases):
    device = make_device()
    device.transition("shell")
    url = f"{releases}/release-2.mender"
    wait_until(device, f"wget -q --spider {url}", timeout=60)  # udhcpc has its lease
    # The boot's resume is over (till then a command refuses: another one is running).
    wait_until(device, "grep -q 'no update in progress' /data/tern/updater.log", timeout=120)

    device.console.sendline(f"tern-updater --config {CONFIG} install --auto-reboot {url}; "
                            "echo \"install exit $?\"")
    device.console.expect(r"install exit (\d+)", time.monotonic() + 900)
    assert device.console.match.group(1) == "0"  # not 143: the shutdown's SIGTERM
    assert device.expect_reboot() == "B"
    # Typed at once, while the boot's resume runs the health checks: it refuses, and it
    # must not cost the commit (resume used to give up on the lock it held).
    device.console.sendline(f"tern-updater --config {CONFIG} install {url}; "
                            "echo \"typed exit $?\"")
    device.console.expect(r"typed exit (\d+)", time.monotonic() + 120)
    assert device.console.match.group(1) == "1"
    shutdown = device.log_path.read_text()
    assert "can't remount" not in shutdown
    mounts = device.run_check("dmesg | grep 'EXT4-fs (vda4)'")
    assert "mounted filesystem" in mounts
    assert "recovery complete" not in mounts  # /data was cleanly unmounted

    wait_until(device, "grep -q 'release-2: committed' /data/tern/updater.log", timeout=300)
    # Unsynced, the log's new size would reach the journal (5 s commits) before its data
    # (delayed allocation, written back after 30 s): a cut now left NUL bytes.
    time.sleep(10)
    device.power_cut()
    device.transition("shell")
    assert device.slot == "B"
    size = device.run_check("wc -c < /data/tern/updater.log").strip()
    text_size = device.run_check("tr -d '\\000' < /data/tern/updater.log | wc -c").strip()
    assert size == text_size, "NUL bytes in the updater's log"
    log = device.run_check("cat /data/tern/updater.log")
    assert "release-2: committed" in log


def test_a_cut_in_the_install_of_install_auto_reboot_ends_committed_without_a_key(
        make_device, releases):
    """The power goes in ArtifactInstall of `install --auto-reboot` (slot B written, the
    reboot not made yet): the fail point stops the command there, then the plug is pulled.
    The boot's resume installs again and makes the reboot itself, as the state store says
    it was asked for; nobody touches the console after the power-on."""
    device = make_device()
    device.transition("shell")
    url = f"{releases}/release-2.mender"
    wait_until(device, f"wget -q --spider {url}", timeout=60)
    wait_until(device, "grep -q 'no update in progress' /data/tern/updater.log", timeout=120)
    device.console.sendline(f"TERN_FAILPOINTS=before:ArtifactInstall tern-updater --config "
                            f"{CONFIG} install --auto-reboot {url}; echo \"cut exit $?\"")
    device.console.expect(r"cut exit (\d+)", time.monotonic() + 900)
    assert device.console.match.group(1) == "99"  # failpoints.CRASH_EXIT
    device.power_cut()
    device.power_on()  # U-Boot's autoboot: no key pressed
    assert device.await_shell(time.monotonic() + 240) == "A"
    assert device.expect_reboot(timeout=300) == "B"  # the reboot resume made
    wait_until(device, "grep -q 'release-2: committed' /data/tern/updater.log", timeout=300)
    env = fw_env(device)
    assert (env["mender_boot_part"], env["upgrade_available"]) == ("3", "0")
    assert device.run_check("cat /etc/tern-release").strip() == "release-2"
