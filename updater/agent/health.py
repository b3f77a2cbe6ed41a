"""Health checks after a trial boot, and the watchdog that covers a hang meanwhile.

All must pass for a commit: every process in `health_wait_processes` running, every
port in `health_wait_ports` accepting connections and every systemd unit in
`health_wait_units` active (waited for up to `health_wait_timeout` s; a unit that fails
or does not exist fails at once), then every executable in `health_dir`, in name order,
exiting 0 within `health_timeout` s.

The checks run inside `tern-updater resume`, a oneshot unit of the boot on a systemd
device: a unit ordered after it, or the end of the boot (`systemctl is-system-running
--wait`), cannot come before the checks end, so waiting for it would only time out.
"""
import array
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from .logcap import cap_text

# <linux/watchdog.h>: _IOR('W', 2, int), and the boot status bit for "the watchdog reset it"
WDIOC_GETBOOTSTATUS = 0x80045702
WDIOF_CARDRESET = 0x0020


class Watchdog:
    """The Linux watchdog device, fed while the updater makes progress.

    The initramfs starts it at every boot. `tern-updater resume` opens it (the first
    `feed`), feeds it while the health checks run and stops it with the magic close
    (`disarm`) once the boot is healthy. If the system hangs before that, or the updater
    dies, the device resets the board; on a trial boot the boot script then counts a
    failed boot and falls back to the old slot.

    If another process holds the device (systemd's RuntimeWatchdogSec, EBUSY), or it
    cannot be opened at all, that process keeps the board safe: this is logged and the
    updater goes on without it.
    """

    def __init__(self, path: str, log: Callable[[str], None]):
        self.path = path
        self.log = log
        self.fd: int | None = None
        self.tried = False

    def _open(self) -> None:
        if self.tried:
            return
        self.tried = True
        if not self.path:
            return
        try:
            self.fd = os.open(self.path, os.O_WRONLY)  # starts it if it is stopped
        except FileNotFoundError:
            pass  # no watchdog on this device
        except OSError as error:
            self.log(f"watchdog {self.path}: {error.strerror or error}; "
                     "not fed by the updater (whoever holds it keeps the board safe)")

    def feed(self) -> None:
        self._open()
        if self.fd is not None:
            os.write(self.fd, b"\0")

    def disarm(self) -> None:
        if self.fd is not None:
            os.write(self.fd, b"V")  # magic close: stop the timer
            os.close(self.fd)
            self.fd = None

    def reset_the_board(self) -> bool:
        """Whether the last reset was this watchdog's (the driver's boot status)."""
        self._open()
        if self.fd is None:
            return False
        status = array.array("i", [0])
        try:
            fcntl.ioctl(self.fd, WDIOC_GETBOOTSTATUS, status)
        except OSError:
            return False  # not a watchdog driver (a plain file in tests)
        return bool(status[0] & WDIOF_CARDRESET)


def run_checks(config: Config, watchdog: Watchdog) -> tuple[bool, list[str]]:
    """(all passed, one line or more per check for the record)."""
    output: list[str] = []
    deadline = time.monotonic() + config.health_wait_timeout
    waits = [(f"process {name}", lambda name=name: _process_running(name))
             for name in config.health_wait_processes]
    waits += [(f"port {address}", lambda address=address: _port_open(address))
              for address in config.health_wait_ports]
    waits += [(f"unit {unit}", lambda unit=unit: _unit_active(unit))
              for unit in config.health_wait_units]
    for label, ready in waits:
        try:
            while not ready():
                watchdog.feed()
                if time.monotonic() > deadline:
                    output.append(f"{label}: not ready after {config.health_wait_timeout:g} s")
                    return False, output
                time.sleep(0.5)
        except NeverReady as error:
            output.append(f"{label}: {error}")
            return False, output
        output.append(f"{label}: ready")
    directory = Path(config.health_dir)
    checks = sorted(p for p in directory.iterdir() if p.is_file() and os.access(p, os.X_OK)
                    ) if directory.is_dir() else []
    for check in checks:
        passed, text = _run_check(check, config.health_timeout, watchdog)
        text = cap_text(text, config.deployment_log_limit // 4)
        output.append(f"{check.name}: {'pass' if passed else 'FAIL'}{': ' + text if text else ''}")
        if not passed:
            return False, output
    return True, output


def _run_check(check: Path, timeout: float, watchdog: Watchdog) -> tuple[bool, str]:
    process = subprocess.Popen([str(check)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:  # reading all along: a chatty check must not block on a full pipe
        watchdog.feed()
        try:
            text = process.communicate(timeout=0.05)[0].strip()
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)  # the check and whatever it started
                process.communicate()
                return False, f"timed out after {timeout:g} s"
    if process.returncode != 0:
        text = f"exit {process.returncode}" + (f": {text}" if text else "")
    return process.returncode == 0, text


class NeverReady(Exception):
    """What a health check waits for will not come (a unit failed)."""


def _unit_active(unit: str) -> bool:
    """Whether systemd has the unit active; NeverReady if it failed or is unknown."""
    try:
        shown = subprocess.run(["systemctl", "show", "--property=LoadState,ActiveState", unit],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NeverReady(f"systemctl: {error}") from None
    state = dict(line.partition("=")[::2] for line in shown.stdout.splitlines())
    if shown.returncode != 0:
        raise NeverReady(f"systemctl show exited {shown.returncode}: {shown.stderr.strip()}")
    if state.get("LoadState") != "loaded":
        raise NeverReady(f"no such unit ({state.get('LoadState', '?')})")
    if state.get("ActiveState") == "failed":
        raise NeverReady("failed")
    return state.get("ActiveState") == "active"


def _process_running(name: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    return True
            except OSError:
                continue
    return False


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False
