"""docs/usb-install.md on the emulated device: a USB stick plugged into the running board
(QMP blockdev-add + device_add: a usb-storage device on its xHCI port, as a user plugs one
in). mdev (started by rcS after the boot's resume) loads the drivers and runs tern-usb-mdev
from /etc/mdev.conf, which runs tern-usb-install: a signed artifact is installed, the board
reboots into the new slot and the boot's resume commits; a wrongly signed one changes
nothing."""
import time

import pytest

from qemu.guest import data_marker, fw_env, put_data_marker, release
from testkit.artifacts import build_artifact
from testkit.usb_stick import make_usb_stick

pytestmark = pytest.mark.qemu


def boot_until_resumed(device) -> None:
    """To the shell, and on until the boot's resume is over (mdev starts after it)."""
    device.transition("shell")
    deadline = time.monotonic() + 180
    while device.run("pidof mdev")[1] != 0:
        assert time.monotonic() < deadline, "mdev never started"
        time.sleep(2)


def test_stick_with_a_signed_artifact_installs_reboots_and_commits(make_device, base_image,
                                                                    tmp_path):
    device = make_device()
    boot_until_resumed(device)
    put_data_marker(device)
    stick = make_usb_stick(tmp_path / "stick.img",
                           base_image.release("release-2").with_suffix(".mender"))
    device.plug_usb_stick(stick)
    device.console.expect("tern-usb: installing release-2.mender from /dev/sda1",
                          time.monotonic() + 120)
    device.console.expect("tern-usb: installed; rebooting into the new system",
                          time.monotonic() + 600)
    assert device.expect_reboot() == "B"
    # The stick is still in: once the resume has committed, mdev sees it again and leaves
    # it alone (no second install, no reboot loop).
    device.console.expect("tern-usb: release-2 is installed, or was tried, already",
                          time.monotonic() + 300)
    assert "release-2: committed" in device.run_check("cat /data/tern/updater.log")
    assert release(device) == "release-2"
    env = fw_env(device)
    assert (env["mender_boot_part"], env["upgrade_available"]) == ("3", "0")
    assert data_marker(device) == "survives"


def test_stick_with_a_wrongly_signed_artifact_changes_nothing(make_device, base_image, keys,
                                                               tmp_path):
    device = make_device()
    boot_until_resumed(device)
    artifact = tmp_path / "release-2.mender"  # the name the device expects, the wrong key
    artifact.write_bytes(build_artifact({"rootfs.ext4": b"not the image\n" * 4096},
                                        name="release-2",
                                        signing_key=keys["other-rsa"].private_key))
    offsets = " ".join(map(str, base_image.layout["env"]["offsets"]))
    snapshot = ("head -c 16M /dev/vda3 | md5sum; fw_printenv; "
                f"for offset in {offsets}; do dd if=/dev/vda bs=16k count=1 iflag=skip_bytes "
                "skip=$offset 2>/dev/null | md5sum; done; "
                "find /data -type f | sort | xargs md5sum; ls -lR /data")
    before = device.run_check(snapshot)
    device.plug_usb_stick(make_usb_stick(tmp_path / "stick.img", artifact))
    device.console.expect(r"tern-usb: REFUSED: .*signature does not verify.*nothing installed",
                          time.monotonic() + 120)
    assert device.run_check(snapshot) == before  # slot B, the environment, /data
    assert release(device) == "release-1"
    assert device.run("pidof tern-updater")[1] != 0  # nothing left running
