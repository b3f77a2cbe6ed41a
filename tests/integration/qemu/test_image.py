"""The build outputs, checked from the host: releases, markers, signed artifacts."""
import json
import subprocess

import pytest

pytestmark = pytest.mark.qemu
CPYTHON_311 = (3495).to_bytes(2, "little") + b"\r\n"  # a .pyc's magic number (Debian's 3.11)


def debugfs_cat(image, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], check=True,
                          capture_output=True).stdout


@pytest.mark.parametrize("name", ["release-1", "release-2", "release-broken", "release-unhealthy",
                                  "release-hang"])
def test_each_release_carries_its_marker_and_kernel(base_image, name):
    image = base_image.release(name)
    assert debugfs_cat(image, "/etc/tern-release") == f"{name}\n".encode()
    assert debugfs_cat(image, "/boot/vmlinuz")[56:60] == b"ARM\x64"  # arm64 Image magic
    assert debugfs_cat(image, "/boot/initrd.img")[:2] == b"\x1f\x8b"


def test_the_python_the_agent_runs_is_byte_compiled(base_image):
    """As Debian's postinsts would leave it: no module the agent imports (the stdlib, the
    agent, cryptography for its signatures) is compiled on the device, where each update
    writes a slot without them."""
    image = base_image.release("release-2")
    for pyc in ["/usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc",
                "/usr/lib/tern-updater/updater/__pycache__/cli.cpython-311.pyc",
                "/usr/lib/python3/dist-packages/cryptography/__pycache__/__init__.cpython-311.pyc",
                "/usr/lib/python3/dist-packages/cryptography/hazmat/primitives/asymmetric/"
                "__pycache__/ed25519.cpython-311.pyc"]:
        assert debugfs_cat(image, pyc)[:4] == CPYTHON_311, pyc


def test_broken_release_has_no_init_and_unhealthy_release_a_failing_check(base_image):
    init = debugfs_cat(base_image.release("release-broken"), "/sbin/init")
    assert init and not init.startswith(b"\x7fELF")
    check = debugfs_cat(base_image.release("release-unhealthy"),
                        "/etc/tern/health.d/50-always-fails")
    assert check.startswith(b"#!/bin/sh") and b"exit 1" in check


def test_hang_release_has_an_init_that_sleeps_for_ever(base_image):
    init = debugfs_cat(base_image.release("release-hang"), "/sbin/init")
    assert init.startswith(b"#!/bin/sh") and b"while :; do sleep" in init


def test_the_initramfs_loads_the_watchdog_driver_with_its_timeout(base_image, tmp_path):
    initrd = tmp_path / "initrd.img.gz"
    initrd.write_bytes(debugfs_cat(base_image.release("release-1"), "/boot/initrd.img"))
    cpio = subprocess.run(["gzip", "-dc", str(initrd)], check=True, capture_output=True).stdout
    order = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "modules.order"],
                           input=cpio, check=True, capture_output=True).stdout.decode()
    timeout = base_image.layout["watchdog"]["timeout"]
    assert order.splitlines()[-1] == f"/lib/modules/i6300esb.ko heartbeat={timeout}"


def test_releases_are_signed_artifacts_that_mender_artifact_verifies(base_image):
    public_key = base_image.directory / base_image.layout["keys"]["artifact_public"]
    for name, release in base_image.layout["releases"].items():
        assert release["artifact"] == f"{name}.mender"
        shown = subprocess.run(["mender-artifact", "read", "-k", str(public_key),
                                str(base_image.directory / release["artifact"])],
                               check=True, capture_output=True, text=True).stdout
        assert "Signature: signed and verified correctly" in shown
        assert "Compatible devices: '[qemu-arm64]'" in shown
        assert f"rootfs-image.version: {name}" in shown


def test_disk_layout_gpt_partitions_and_environment_inside_the_boot_partition(base_image):
    table = json.loads(subprocess.run(["sfdisk", "--json", str(base_image.disk)], check=True,
                                      capture_output=True, text=True).stdout)["partitiontable"]
    layout = base_image.layout
    assert table["label"] == "gpt"
    assert [(p["name"], p["start"] * 512, p["size"] * 512) for p in table["partitions"]] == [
        (name, part["offset"], part["size"]) for name, part in layout["partitions"].items()]
    boot = layout["partitions"]["boot"]
    for offset in layout["env"]["offsets"]:
        assert boot["offset"] <= offset <= boot["offset"] + boot["size"] - layout["env"]["size"]
