import json
import socket
import threading
import time
from pathlib import Path

import pytest

from qemu.launch import QemuConfig, build_command, connect_unix


def config(**overrides) -> QemuConfig:
    return QemuConfig(disk=Path("/d/dev1.qcow2"), console_socket=Path("/r/console"),
                      qmp_socket=Path("/r/qmp"), **overrides)


def option_values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == option]


def test_one_cpu_u_boot_firmware_and_starts_paused():
    command = build_command(config())
    assert command[0] == "qemu-system-aarch64"
    assert option_values(command, "-smp") == ["1"]
    assert option_values(command, "-cpu") == ["cortex-a57"]
    assert option_values(command, "-bios") == ["/usr/lib/u-boot/qemu_arm64/u-boot.bin"]
    assert "-S" in command


def test_console_and_qmp_on_unix_sockets():
    command = build_command(config())
    assert option_values(command, "-chardev") == [
        "socket,id=console,path=/r/console,server=on,wait=off"]
    assert option_values(command, "-serial") == ["chardev:console"]
    assert option_values(command, "-qmp") == ["unix:/r/qmp,server=on,wait=off"]


def test_system_disk_format_from_suffix_and_extra_disks_read_only():
    command = build_command(config(extra_disks=(Path("/i/release-2.ext4"),)))
    assert option_values(command, "-drive") == [
        "if=none,id=disk0,format=qcow2,file=/d/dev1.qcow2",
        "if=none,id=disk1,format=raw,file=/i/release-2.ext4,readonly=on",
    ]
    raw = build_command(QemuConfig(disk=Path("/d/disk.img"), console_socket=Path("/c"),
                                   qmp_socket=Path("/q")))
    assert "if=none,id=disk0,format=raw,file=/d/disk.img" in raw


def test_ssh_port_forwarded_on_loopback_only():
    netdev = option_values(build_command(config(ssh_port=2222)), "-netdev")
    assert netdev == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]
    assert option_values(build_command(config()), "-netdev") == ["user,id=net0"]


def test_pure():
    assert build_command(config()) == build_command(config())


def test_connect_unix_waits_for_the_socket_to_listen(tmp_path):
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def listen_later():
        time.sleep(0.2)
        server.bind(str(path))
        server.listen(1)

    threading.Thread(target=listen_later).start()
    client = connect_unix(path, time.monotonic() + 5)
    client.close()
    server.close()
    with pytest.raises(FileNotFoundError):
        connect_unix(tmp_path / "never", time.monotonic() + 0.1)


def test_mac_and_console_log_when_given():
    command = build_command(config(mac="52:54:00:fe:00:01", console_log=Path("/r/log")))
    assert "virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:fe:00:01" in command
    assert option_values(command, "-chardev") == [
        "socket,id=console,path=/r/console,server=on,wait=off,logfile=/r/log"]


def test_a_write_log_puts_blklogwrites_under_the_system_disk_only():
    command = build_command(config(write_log=Path("/d/writes.log"),
                                   extra_disks=(Path("/i/release-2.ext4"),)))
    (node,) = [json.loads(value) for value in option_values(command, "-blockdev")]
    assert node["driver"] == "blklogwrites" and node["log-sector-size"] == 512
    assert node["file"] == {"driver": "qcow2",
                            "file": {"driver": "file", "filename": "/d/dev1.qcow2"}}
    assert node["log"] == {"driver": "file", "filename": "/d/writes.log"}
    devices = option_values(command, "-device")
    assert "virtio-blk-pci,drive=disk0,write-cache=on" in devices
    assert option_values(command, "-drive") == [
        "if=none,id=disk1,format=raw,file=/i/release-2.ext4,readonly=on"]
