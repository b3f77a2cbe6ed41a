"""One emulated device: power, boot states and commands over its serial console."""
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from qemu.console import SHELL_PROMPT, Console
from qemu.launch import QemuConfig, build_command, connect_unix
from qemu.qmp import QMP

UBOOT_BANNER = r"U-Boot 20\d\d"
AUTOBOOT = "Hit any key to stop autoboot"
UBOOT_PROMPT = "=> "
STATES = ("off", "uboot", "shell")  # targets of transition(); "booting" is in between


class DeviceError(Exception):
    pass


def make_overlay(base: Path, overlay: Path) -> Path:
    """A qcow2 overlay on a read-only base image: one disposable disk per device."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    str(Path(base).resolve()), str(overlay)], check=True)
    return overlay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Device:
    """Moves between "off", "uboot" and "shell" like labgrid's UBootStrategy.

    Each wait has one monotonic deadline. Everything the console prints goes to
    `log_path`, across reboots and power cycles.
    """

    def __init__(self, name: str, disk: Path, log_path: Path, extra_disks=(),
                 ssh_key: Path | None = None, boot_timeout: float = 90, cpu: str = "cortex-a57",
                 write_log: Path | None = None):
        """`write_log`: log every write to `disk` there (QEMU's blklogwrites, from the
        first power-on; each power-on starts the log again)."""
        self.name = name
        self.disk = Path(disk)
        self.extra_disks = tuple(Path(d) for d in extra_disks)
        self.log_path = Path(log_path)
        self.ssh_key = ssh_key
        self.boot_timeout = boot_timeout
        self.cpu = cpu
        self.write_log = write_log
        self.state = "off"
        self.slot = None
        self.ssh_port = None
        self.process = None
        self.console = None
        self.qmp = None
        self._log = None
        self._sockets = None

    # -- power ---------------------------------------------------------------

    def power_on(self) -> None:
        """Start QEMU paused, attach console and QMP, then let it run."""
        if self.process:
            raise DeviceError(f"{self.name} is already on")
        self._sockets = Path(tempfile.mkdtemp(prefix=f"tern-{self.name}-"))
        self.ssh_port = free_port()
        config = QemuConfig(disk=self.disk, extra_disks=self.extra_disks,
                            console_socket=self._sockets / "console",
                            qmp_socket=self._sockets / "qmp", ssh_port=self.ssh_port,
                            cpu=self.cpu, write_log=self.write_log)
        if self.write_log:
            self.write_log.write_bytes(b"")
        self._log = open(self.log_path, "a", encoding="utf-8", buffering=1)
        self._log.write(f"\n===== {self.name}: power on =====\n")
        self.process = subprocess.Popen(build_command(config), stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        try:
            self.console = Console(connect_unix(config.console_socket, deadline), self._log)
            self.qmp = QMP(connect_unix(config.qmp_socket, deadline))
        except OSError as error:
            self.power_cut()
            raise DeviceError(f"QEMU did not start ({error}), see {self.log_path}") from error
        self.qmp.execute("cont")
        self.state = "booting"

    def power_cut(self) -> str:
        """Pull the plug: SIGKILL QEMU, nothing is flushed or shut down. Returns what the
        console printed after the last match, up to the cut."""
        unread = ""
        if self.process:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            if self.console:
                unread = self.console.drain()
            self._log.write(f"\n===== {self.name}: power cut =====\n")
        self._cleanup()
        return unread

    def reset(self) -> None:
        """Press the reset button (the guest restarts in U-Boot)."""
        self.qmp.execute("system_reset")
        self.state = "booting"

    def stop(self) -> None:
        self.qmp.execute("stop")

    def cont(self) -> None:
        self.qmp.execute("cont")

    # -- USB -------------------------------------------------------------------

    def plug_usb_stick(self, image: Path, name: str = "stick") -> None:
        """Plug a USB stick into the running board, as a user does: QMP's blockdev-add
        and device_add (a usb-storage device on the board's xHCI port), `image` read-only."""
        self.qmp.execute("blockdev-add", **{
            "node-name": f"{name}-disk", "driver": "raw", "read-only": True,
            "file": {"driver": "file", "filename": str(Path(image).resolve())}})
        self.qmp.execute("device_add", driver="usb-storage", id=name, drive=f"{name}-disk",
                         bus="usb.0", removable=True)

    def unplug_usb_stick(self, name: str = "stick") -> None:
        """Pull the stick `name` out: device_del, and once QEMU says it is gone
        (DEVICE_DELETED), its disk."""
        self.qmp.execute("device_del", id=name)
        self.qmp.wait_event("DEVICE_DELETED", device=name)
        self.qmp.execute("blockdev-del", **{"node-name": f"{name}-disk"})

    def _cleanup(self) -> None:
        for closable in (self.console, self.qmp):
            if closable:
                closable.close()
        if self._sockets:
            shutil.rmtree(self._sockets, ignore_errors=True)
        if self._log:
            self._log.close()
        self.process = self.console = self.qmp = self._log = self._sockets = None
        self.state, self.slot = "off", None

    # -- states --------------------------------------------------------------

    def transition(self, state: str) -> None:
        """Bring the device to `state`, through the states before it."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}, expected one of {STATES}")
        if state == self.state:
            return
        if state == "off":
            self.power_cut()
        elif state == "uboot":
            self.transition("off")
            self.power_on()
            deadline = time.monotonic() + self.boot_timeout
            self.console.expect(AUTOBOOT, deadline)
            self.console.sendline()
            self.console.expect(UBOOT_PROMPT, deadline)
            self.state = "uboot"
        elif state == "shell":
            if self.state != "uboot":
                self.transition("uboot")
            self.console.sendline("boot")
            self.await_shell(time.monotonic() + self.boot_timeout)

    def expect_reboot(self, timeout: float | None = None) -> str:
        """Follow a reboot the guest starts itself (and any resets on the way) to the shell.

        Returns the booted slot.
        """
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        self.console.expect(UBOOT_BANNER, deadline)
        self.state = "booting"
        return self.await_shell(deadline)

    def await_shell(self, deadline: float) -> str:
        """Wait for the shell prompt (the U-Boot prompt instead: DeviceError); the slot."""
        index = self.console.expect([SHELL_PROMPT, f"\n{UBOOT_PROMPT}"], deadline)
        if index == 1:
            self.state = "uboot"
            raise DeviceError(f"{self.name} stopped at the U-Boot prompt instead of booting")
        self.state, self.slot = "shell", self.console.match.group(1)
        return self.slot

    # -- commands ------------------------------------------------------------

    def run(self, command: str, timeout: float = 60) -> tuple[str, int]:
        """Run a command in the device's shell; returns (output, exit code)."""
        if self.state != "shell":
            raise DeviceError(f"{self.name} is in state {self.state}, not shell")
        return self.console.run(command, time.monotonic() + timeout)

    def run_check(self, command: str, timeout: float = 60) -> str:
        output, code = self.run(command, timeout)
        if code != 0:
            raise DeviceError(f"{command!r} exited {code}:\n{output}")
        return output

    def uboot_run(self, command: str, timeout: float = 30) -> str:
        """Run a U-Boot command at the `=>` prompt; returns what it printed."""
        if self.state != "uboot":
            raise DeviceError(f"{self.name} is in state {self.state}, not uboot")
        self.console.sendline(command)
        deadline = time.monotonic() + timeout
        self.console.expect(re.escape(command) + r"\r?\n", deadline)
        self.console.expect(UBOOT_PROMPT, deadline)
        return self.console.pexpect.before.replace("\r\n", "\n")

    def ssh(self):
        """A fabric Connection to the device's SSH server (forwarded port on 127.0.0.1)."""
        from fabric import Connection

        return Connection("127.0.0.1", user="root", port=self.ssh_port, connect_timeout=30,
                          connect_kwargs={"key_filename": str(self.ssh_key),
                                          "look_for_keys": False, "allow_agent": False})

    def close(self) -> None:
        """Power off, whatever state the device was left in."""
        self.power_cut()

