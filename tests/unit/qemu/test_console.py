"""Marker-framed commands against a fake serial line that runs a real /bin/sh per line."""
import socket
import subprocess
import threading
import time

import pytest

from qemu.console import Console


@pytest.fixture
def console(tmp_path):
    path = tmp_path / "console"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        connection, _ = server.accept()
        lines = connection.makefile("rb")
        connection.sendall(b"device-A# ")
        for line in lines:
            connection.sendall(line.replace(b"\n", b"\r\n"))  # a tty echoes what is typed
            result = subprocess.run(["sh", "-c", line.decode()], capture_output=True)
            connection.sendall(result.stdout.replace(b"\n", b"\r\n") + b"device-A# ")
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    log = open(tmp_path / "console.log", "w")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    console = Console(client, log)
    console.expect("device-A# ", time.monotonic() + 5)
    yield console
    console.close()
    log.close()
    server.close()


def test_output_and_exit_code(console):
    assert console.run("echo hello; echo world", time.monotonic() + 5) == ("hello\nworld\n", 0)
    assert console.run("false", time.monotonic() + 5) == ("", 1)
    assert console.run("exit 7", time.monotonic() + 5) == ("", 7)


def test_prompt_text_in_output_does_not_end_the_command(console):
    output, code = console.run("echo 'device-A# '; echo after", time.monotonic() + 5)
    assert output == "device-A# \nafter\n"
    assert code == 0


def test_drain_returns_what_no_expect_matched_yet(console):
    """What a power cut leaves: the rest of the buffer after a match, then the line."""
    console.sendline("echo one; echo two; echo three")
    console.expect("one\r\n", time.monotonic() + 5)
    unread = console.drain()
    assert unread.startswith("two\r\nthree\r\n") and "one" not in unread


def test_an_unread_console_never_blocks_the_board(tmp_path):
    """QEMU's serial port stops the guest's CPU while the line is full: 1 MiB of output
    (far more than a socket holds) must go through while the test reads nothing, and the
    test finds all of it afterwards."""
    board, harness = socket.socketpair()
    console = Console(harness, None)
    output = b"x" * (1 << 20) + b"\r\ndevice-A# "
    board.settimeout(10)
    board.sendall(output)  # socket.timeout here: the board would have stopped
    console.expect("device-A# ", time.monotonic() + 10)
    assert console.pexpect.before == "x" * (1 << 20) + "\r\n"
    console.sendline("echo typed")
    assert board.recv(100) == b"echo typed\n"
    board.close()
    console.close()
