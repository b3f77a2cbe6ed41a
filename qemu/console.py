"""The serial console: QEMU's unix socket read through pexpect, marker-framed commands."""
import contextlib
import os
import random
import re
import select
import socket
import threading
import time

import pexpect
from pexpect import fdpexpect

SHELL_PROMPT = r"device-([AB])# "
# labgrid's marker alphabet: no R, I or D, so a marker never spells ERROR, FAIL, INFO or DEBUG.
MARKER_ALPHABET = "ABCEFGHJKLMNOPQSTUVWXYZ"


class Console:
    """The socket is drained all the time, by a thread, into a pipe that pexpect reads:
    QEMU's serial port blocks the guest's CPU while the line is full, so a console left
    unread (a test waiting on the server) must not stop the board once the socket's
    buffers (about 200 KiB) are full, as it stopped the systemd device after a rollback."""

    def __init__(self, sock: socket.socket, log):
        self._sock = sock
        self._read_end, write_end = os.pipe()
        self._pump = threading.Thread(target=_pump, args=(sock, write_end), daemon=True,
                                      name="console-pump")
        self._pump.start()
        self.pexpect = fdpexpect.fdspawn(self._read_end, maxread=65536, encoding="utf-8",
                                         codec_errors="replace")
        self.pexpect.logfile_read = log

    def expect(self, patterns, deadline: float) -> int:
        """Wait for one of `patterns` until the monotonic `deadline`; returns its index."""
        return self.pexpect.expect(patterns, timeout=max(deadline - time.monotonic(), 0))

    @property
    def match(self) -> re.Match:
        return self.pexpect.match

    def send(self, text: str) -> None:
        self._sock.sendall(text.encode())

    def sendline(self, line: str = "") -> None:
        self.send(line + "\n")

    def run(self, command: str, deadline: float, prompt: str = SHELL_PROMPT) -> tuple[str, int]:
        """Run a shell command; returns its output (\\n line ends) and exit code.

        The marker is typed split by quotes ('ABCD''EFGHJK') so the echoed command
        line never matches it; only the shell's own output does. The command runs in
        a subshell, so an `exit` in it does not end the login shell.
        """
        marker = "".join(random.choices(MARKER_ALPHABET, k=10))
        typed = f"'{marker[:4]}''{marker[4:]}'"
        self.sendline(f"echo {typed}; ( {command} ); echo {typed} $?")
        self.expect(re.compile(rf"{marker}\r?\n(.*?){marker} (\d+)\r?\n", re.DOTALL), deadline)
        output, code = self.match.group(1), int(self.match.group(2))
        self.expect(prompt, deadline)
        return output.replace("\r\n", "\n"), code

    def drain(self) -> str:
        """Read what is left on the line into the log (after QEMU is gone: up to EOF);
        returns all not yet matched: the rest of the buffer and what was left."""
        unread = [self.pexpect.buffer]
        try:
            while chunk := self.pexpect.read_nonblocking(65536, timeout=1):
                unread.append(chunk)
        except (pexpect.EOF, pexpect.TIMEOUT):
            pass
        return "".join(unread)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # the pump sees the end and stops
        self._pump.join(timeout=10)
        self._sock.close()
        os.close(self._read_end)


def _pump(sock: socket.socket, pipe: int) -> None:
    """Socket to pipe, holding in memory what the pipe cannot take yet; closes the pipe
    at the socket's end (pexpect's EOF)."""
    pending = bytearray()
    os.set_blocking(pipe, False)
    try:
        while True:
            readable, writable, _ = select.select([sock], [pipe] if pending else [], [])
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                pending += chunk
            if writable:
                with contextlib.suppress(BlockingIOError):
                    del pending[:os.write(pipe, pending)]
        os.set_blocking(pipe, True)
        while pending:
            del pending[:os.write(pipe, pending)]
    except OSError:
        pass  # the socket closed under it, or nobody reads the pipe any more
    finally:
        os.close(pipe)
