"""tern-qemu in a terminal: run with the console attached, detach, attach again, stop."""
import json
import socket
import sys
import time
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.qemu

TERN_QEMU = str(Path(sys.executable).parent / "tern-qemu")


def wait_for_ssh_banner(info: dict, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", info["ssh_port"]), timeout=5) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the detached device never started its SSH server"
        time.sleep(1)


def test_run_shows_the_console_and_powers_off_on_detach(base_image):
    run = pexpect.spawn(TERN_QEMU, ["run", str(base_image.disk), "--name", "cli-run"],
                        encoding="utf-8", timeout=90)
    run.expect(r"U-Boot 20\d\d")
    run.expect("device-A# ")
    run.send("cat /etc/tern-release\r")
    run.expect("release-1")
    run.sendcontrol("]")
    run.expect(pexpect.EOF)
    run.close()
    assert run.exitstatus == 0
    assert not Path("/tmp/tern-qemu/cli-run").exists()


def test_detached_device_accepts_console_then_stops(base_image):
    started = pexpect.run(f"{TERN_QEMU} run {base_image.disk} --name cli-bg --detach",
                          encoding="utf-8", withexitstatus=True, timeout=30)
    assert started[1] == 0, started[0]
    try:
        wait_for_ssh_banner(json.loads(Path("/tmp/tern-qemu/cli-bg/info.json").read_text()))
        console = pexpect.spawn(TERN_QEMU, ["console", "cli-bg"], encoding="utf-8", timeout=30)
        console.expect(r"console attached.*\n")  # (typing earlier would be flushed)
        console.send("\r")  # the boot is over (SSH is up): ask for a fresh prompt
        console.expect("device-A# ")
        console.sendcontrol("]")
        console.expect(pexpect.EOF)
    finally:
        stopped = pexpect.run(f"{TERN_QEMU} stop cli-bg", withexitstatus=True, timeout=30)
    assert stopped[1] == 0
    assert not Path("/tmp/tern-qemu/cli-bg").exists()
