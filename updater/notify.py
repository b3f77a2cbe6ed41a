"""systemd's service notifications (sd_notify) with the stdlib: a datagram to $NOTIFY_SOCKET.

Under `Type=notify` the daemon says READY=1 once it runs, and under `WatchdogSec=` it says
WATCHDOG=1 at half the interval systemd gives it in $WATCHDOG_USEC; a service that misses
the interval is killed and, with `Restart=on-failure`, started again. Outside systemd
(no $NOTIFY_SOCKET: the busybox device, the fleet simulator, tests) nothing is sent.
"""
import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name": an abstract socket (a NUL byte first)
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        for_us = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        self.interval = int(usec) / 2e6 if usec.isdigit() and int(usec) and for_us else None
        self.next_ping = 0.0

    def send(self, state: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), self.address)

    def ready(self) -> None:
        self.send("READY=1")

    def alive(self) -> None:
        """WATCHDOG=1, at most once per half interval: call it from the loop's progress."""
        if self.interval is None or time.monotonic() < self.next_ping:
            return
        self.send("WATCHDOG=1")
        self.next_ping = time.monotonic() + self.interval

    def sleep(self, seconds: float) -> None:
        """Sleep, saying WATCHDOG=1 at each half interval meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.alive()
            time.sleep(min(left, self.interval or left))
