"""The USB-stick flow of docs/usb-install.md: updater/examples/tern-usb-install on a real
file system in a loop device, with tern-updater on a simulated device. (ext4: this host's
kernel has no vfat; the script leaves the type to mount.)"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.host_device import new_device

SCRIPT = Path(__file__).parents[3] / "updater/examples/tern-usb-install"


@pytest.fixture
def stick(tmp_path, loop_devices):
    """stick(*artifacts) -> the loop device of a FAT stick holding them."""
    def make(*artifacts: Path) -> str:
        content = tmp_path / "stick-content"
        content.mkdir()
        for artifact in artifacts:
            shutil.copy(artifact, content / artifact.name)
        image = tmp_path / "stick.img"
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
