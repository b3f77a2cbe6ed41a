"""The serial console: QEMU's unix socket read through pexpect, marker-framed commands."""
import random
import re
import socket
import time

import pexpect
from pexpect import fdpexpect

SHELL_PROMPT = r"device-([AB])# "
# labgrid's marker alphabet: no R, I or D, so a marker never spells ERROR, FAIL, INFO or DEBUG.
MARKER_ALPHABET = "ABCEFGHJKLMNOPQSTUVWXYZ"


class Console:
    def __init__(self, sock: socket.socket, log):
        self._sock = sock
        self.pexpect = fdpexpect.fdspawn(self._sock.fileno(), encoding="utf-8",
                                         codec_errors="replace")
        self.pexpect.logfile_read = log

    def expect(self, patterns, deadline: float) -> int:
        """Wait for one of `patterns` until the monotonic `deadline`; returns its index."""
        return self.pexpect.expect(patterns, timeout=max(deadline - time.monotonic(), 0))

    @property
    def match(self) -> re.Match:
        return self.pexpect.match

    def send(self, text: str) -> None:
        self.pexpect.send(text)

    def sendline(self, line: str = "") -> None:
        self.pexpect.send(line + "\n")

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
        self._sock.close()
