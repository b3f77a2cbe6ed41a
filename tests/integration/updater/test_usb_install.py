"""The USB-stick flow of docs/usb-install.md: updater/usb/tern-usb-install on a real
file system in a loop device, with tern-updater on a simulated device. (ext4: this host's
kernel has no vfat; the script leaves the type to mount.)"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from testkit.host_device import new_device

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "updater/usb/tern-usb-install"


@pytest.fixture
def stick(tmp_path, loop_devices):
    """stick(*artifacts) -> the loop device of a FAT stick holding them."""
    def make(*artifacts: Path) -> str:
        content = Path(tempfile.mkdtemp(prefix="stick-content-", dir=tmp_path))
        for artifact in artifacts:
            shutil.copy(artifact, content / artifact.name)
        image = content.with_suffix(".img")
        subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image), "16M"], check=True,
                       capture_output=True)
        return loop_devices(image)
    return make


def run_script(tmp_path, device, loop):
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "reboot").write_text(f"#!/bin/sh\ntouch {tmp_path}/rebooted\n")
    (fake_bin / "reboot").chmod(0o755)
    env = {**os.environ, "TERN_CONFIG": str(device.toml),
           "TERN_CONSOLE": str(tmp_path / "console"),
           "PATH": f"{fake_bin}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([str(SCRIPT), loop], env=env, capture_output=True, text=True)
    return result.returncode, (tmp_path / "console").read_text()


def test_stick_with_an_artifact_installs_and_reboots(tmp_path, stick, make_artifact):
    device = new_device(tmp_path / "device")
    artifact = make_artifact(name="release-2")
    loop = stick(artifact)
    code, console = run_script(tmp_path, device, loop)
    assert code == 0, console
    assert f"tern-usb: installing {artifact.name} from {loop}" in console
    assert "slot b: 300004 bytes written and verified" in console
    assert "rebooting into the new system" in console
    assert (tmp_path / "rebooted").exists()
    assert not os.path.ismount(f"/run/tern-usb/{Path(loop).name}")
    device.power_on()
    assert device.run("resume") == 0
    assert device.provides()["artifact_name"] == "release-2"

    # Still in at the next boot (udev and mdev see it again): left alone, no reboot loop.
    (tmp_path / "rebooted").unlink()
    code, console = run_script(tmp_path, device, loop)
    assert code == 0, console
    assert "release-2 is installed, or was tried, already" in console
    assert not (tmp_path / "rebooted").exists()


def test_stick_with_a_wrongly_signed_artifact_changes_nothing(tmp_path, stick, make_artifact,
                                                               keys):
    device = new_device(tmp_path / "device")
    device.settings["verify_keys"] = [str(keys["rsa"].public_path)]
    device.run("status")
    env, data = device.env_bytes(), sorted(device.config.data.rglob("*"))
    loop = stick(make_artifact(name="release-2", key=keys["other-rsa"]))
    code, console = run_script(tmp_path, device, loop)
    assert code == 1
    assert "tern-usb: REFUSED: " in console and "signature does not verify" in console
    assert not (tmp_path / "rebooted").exists()
    assert device.env_bytes() == env
    assert sorted(device.config.data.rglob("*")) == data  # no state, no last result


def test_stick_with_a_foreign_artifact_fails_on_the_console(tmp_path, stick, make_artifact):
    device = new_device(tmp_path / "device")
    before = device.env_bytes()
    loop = stick(make_artifact(device_types=["raspberrypi4"]))
    code, console = run_script(tmp_path, device, loop)
    assert code == 1
    assert "not compatible with device qemu-arm64" in console
    assert "installation FAILED" in console
    assert not (tmp_path / "rebooted").exists()
    assert device.env_bytes() == before


def test_stick_without_exactly_one_artifact(tmp_path, stick, make_artifact):
    device = new_device(tmp_path / "device")
    loop = stick(make_artifact(name="a"), make_artifact(name="b"))
    code, console = run_script(tmp_path, device, loop)
    assert code == 1 and "expected exactly one *.mender file" in console
    assert "found 2 (" in console
    code, console = run_script(tmp_path, device, stick())
    assert code == 1 and "expected exactly one *.mender file at the top of the stick, " \
        "found 0 ()" in console


def test_stick_with_a_module_artifact_commits_without_a_reboot(tmp_path, stick):
    device = new_device(tmp_path / "device")
    target = tmp_path / "etc-app"
    files = {"dest_dir": str(target), "filename": "app.conf", "app.conf": "v2\n"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    artifact = tmp_path / "app-2.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "single-file", "-n",
                    "app-2", "-t", "qemu-arm64", *[x for n in files for x in
                                                    ("-f", str(tmp_path / n))],
                    "-o", str(artifact)], check=True, capture_output=True)
    code, console = run_script(tmp_path, device, stick(artifact))
    assert code == 0, console
    assert (target / "app.conf").read_text() == "v2\n"
    assert device.provides()["artifact_name"] == "app-2"
    assert not (tmp_path / "rebooted").exists()


# The systemd side (shipped in the package: debian/rules), checked by systemd's own tools on
# this host; the emulated busybox device runs the mdev side (tests/integration/qemu).

def test_the_usb_install_unit_passes_systemd_analyze_verify(tmp_path):
    """An instance as udev starts it, in a root with this host's units and the script."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    shutil.copy(ROOT / "updater/systemd/tern-usb-install@.service", root / "lib/systemd/system")
    (root / "usr/share/tern").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "usr/share/tern/tern-usb-install")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "tern-usb-install@sda1.service"], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    (root / "usr/share/tern/tern-usb-install").unlink()  # what verify would catch
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "tern-usb-install@sda1.service"], capture_output=True, text=True)
    assert result.returncode != 0 and "tern-usb-install is not executable" in result.stderr


def udev_properties(partition: str, *extra_rules: str) -> dict[str, str]:
    """`udevadm test` of an add event with the rule (and `extra_rules` first) in
    /run/udev/rules.d, in a mount namespace of its own: the host's rules stay as they are.
    The properties, and RUN: the builtins and programs the event would run, one a line."""
    rules = ROOT / "updater/usb/99-tern-usb.rules"
    script = ("set -e; mkdir -p /run/udev; mount -t tmpfs tmpfs /run/udev; "
              "mkdir /run/udev/rules.d; cp \"$1\" /run/udev/rules.d/; shift; "
              "for rule in \"$@\"; do echo \"$rule\" >> /run/udev/rules.d/00-test.rules; done; "
              f"udevadm test --action=add /sys/class/block/{partition}")
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", str(rules),
                             *extra_rules], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "99-tern-usb.rules" in result.stderr + result.stdout  # read, without an error
    lines = result.stdout.splitlines()
    runs = [line.removeprefix("run: ") for line in lines if line.startswith("run: ")]
    return dict(line.split("=", 1) for line in lines if "=" in line) | {"RUN": "\n".join(runs)}


def test_the_udev_rule_starts_the_unit_for_a_usb_partition_with_a_file_system(tmp_path,
                                                                               loop_devices):
    image = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-C", str(image), "8192"], check=True, capture_output=True)
    loop = Path(loop_devices(image)).name
    # A loop device is no USB disk: the bus is what udev's usb_id would have set.
    on_usb = udev_properties(loop, 'SUBSYSTEM=="block", ENV{ID_BUS}="usb"')
    assert on_usb["ID_FS_USAGE"] == "filesystem"
    assert on_usb["SYSTEMD_WANTS"] == f"tern-usb-install@{loop}.service"
    # FAT's driver, before the unit runs (mount, in a busybox sh, tries only loaded ones)
    assert "'kmod load fs-vfat'" in on_usb["RUN"].splitlines()
    elsewhere = udev_properties(loop)
    assert "SYSTEMD_WANTS" not in elsewhere and "fs-vfat" not in elsewhere["RUN"]  # not USB
