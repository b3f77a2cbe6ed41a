"""The QEMU command line for one emulated device, built from a plain config."""
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")


@dataclass(frozen=True)
class QemuConfig:
    disk: Path
    console_socket: Path
    qmp_socket: Path
    ssh_port: int | None = None
    extra_disks: tuple[Path, ...] = ()
    mac: str | None = None  # the NIC's (QEMU's default: 52:54:00:12:34:56)
    console_log: Path | None = None  # QEMU writes the console here too, attached or not
    cpu: str = "cortex-a57"
    memory_mib: int = 512
    firmware: Path = UBOOT
    qemu: str = "qemu-system-aarch64"
    extra_args: tuple[str, ...] = field(default=())
    # Log every write to the system disk here (QEMU's blklogwrites; the file must exist):
    # qemu.replay rebuilds the disk as a power cut could leave it.
    write_log: Path | None = None


def disk_format(path: Path) -> str:
    return "qcow2" if Path(path).suffix == ".qcow2" else "raw"


def build_command(config: QemuConfig) -> list[str]:
    """Start paused (-S): the caller attaches the console first, then sends QMP `cont`."""
    hostfwd = f",hostfwd=tcp:127.0.0.1:{config.ssh_port}-:22" if config.ssh_port else ""
    mac = f",mac={config.mac}" if config.mac else ""
    logfile = f",logfile={config.console_log}" if config.console_log else ""
    command = [
        config.qemu, "-M", "virt", "-cpu", config.cpu, "-smp", "1", "-m", str(config.memory_mib),
        "-bios", str(config.firmware), "-S", "-display", "none", "-monitor", "none",
        "-chardev", f"socket,id=console,path={config.console_socket},server=on,wait=off{logfile}",
        "-serial", "chardev:console",
        "-qmp", f"unix:{config.qmp_socket},server=on,wait=off",
        "-netdev", f"user,id=net0{hostfwd}", "-device", f"virtio-net-pci,netdev=net0,romfile={mac}",
        "-device", "virtio-rng-pci",
        # A hardware watchdog (armed by the initramfs at every boot): when it fires,
        # QEMU resets the board like a power cycle and emits a QMP WATCHDOG event.
        "-device", "i6300esb", "-action", "watchdog=reset",
        # A USB port for sticks plugged in while the board runs (Device.plug_usb_stick).
        "-device", "qemu-xhci,id=usb",
    ]
    # The system disk is /dev/vda; extra disks (e.g. release images to install) are
    # read-only /dev/vdb, /dev/vdc... so devices can share them.
    # The guest sees a volatile write cache (virtio-blk's flush feature: QEMU's default
    # cache=writeback), so that its flushes are the points real storage keeps writes at.
    for index, disk in enumerate((config.disk, *config.extra_disks)):
        if index == 0 and config.write_log:
            command += ["-blockdev", json.dumps(logged_disk(disk, config.write_log)),
                        "-device", "virtio-blk-pci,drive=disk0,write-cache=on"]
            continue
        readonly = ",readonly=on" if index else ""
        command += ["-drive",
                    f"if=none,id=disk{index},format={disk_format(disk)},file={disk}{readonly}",
                    "-device", f"virtio-blk-pci,drive=disk{index}"]
    return command + list(config.extra_args)


def logged_disk(disk: Path, log: Path) -> dict:
    return {"driver": "blklogwrites", "node-name": "disk0", "log-sector-size": 512,
            "file": {"driver": disk_format(disk),
                     "file": {"driver": "file", "filename": str(disk)}},
            "log": {"driver": "file", "filename": str(log)}}


def connect_unix(path: Path, deadline: float) -> socket.socket:
    """Connect to a socket QEMU is still creating (it exists a moment before it listens)."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
