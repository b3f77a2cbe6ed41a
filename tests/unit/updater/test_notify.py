"""sd_notify with the stdlib: datagrams to $NOTIFY_SOCKET, WATCHDOG=1 at half of
$WATCHDOG_USEC and only from the daemon's loop. A real unix socket stands in for systemd."""
import os
import socket
import time
from types import SimpleNamespace

import pytest

from updater.agent.daemon import Daemon
from updater.config import Config
from updater.notify import Notifier


@pytest.fixture
def systemd(tmp_path):
    """The socket systemd would listen on, and what it heard."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(tmp_path / "notify")
        sock.bind(path)
        sock.settimeout(0)
        heard = []

        def messages() -> list[str]:
            while True:
                try:
                    heard.append(sock.recv(4096).decode())
                except BlockingIOError:
                    return heard
        yield path, messages


def test_ready_and_watchdog_at_half_the_interval(systemd):
    path, messages = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert notifier.interval == 0.1
    notifier.ready()
    notifier.sleep(0.35)
    heard = messages()
    assert heard[0] == "READY=1"
    assert 3 <= heard.count("WATCHDOG=1") <= 5  # at 0, 0.1, 0.2, 0.3 s
    notifier.alive()  # within the half interval: not again
    notifier.alive()
    assert messages().count("WATCHDOG=1") <= heard.count("WATCHDOG=1") + 1


def test_an_abstract_socket_name_starts_with_a_nul_byte():
    notifier = Notifier({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify"})
    assert notifier.address == "\0/org/freedesktop/systemd1/notify"


def test_nothing_without_systemd_or_for_another_process(systemd):
    path, messages = systemd
    Notifier({}).ready()
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000",
                      "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.interval is None
    other.alive()
    assert messages() == []


class StopLoop(Exception):
    pass


def test_the_daemon_says_ready_then_watchdog_from_its_loop_only(systemd, monkeypatch, tmp_path):
    """READY=1 once; WATCHDOG=1 at each round and while it waits; a round that never
    returns (a hung loop) sends nothing more, so systemd's watchdog ends it."""
    path, messages = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    config = Config(data_dir=str(tmp_path), server_url="https://ota.example.com",
                    bootloader="file", bootloader_env=str(tmp_path / "env"),
                    device_type="test")
    daemon = Daemon(config, client=SimpleNamespace(verify=True))
    rounds = []
    before_the_hang = []

    def cycle() -> float:
        rounds.append(time.monotonic())
        if len(rounds) == 3:
            before_the_hang.extend(messages())
            time.sleep(0.3)  # hung: six half intervals
            raise StopLoop
        return 0.12

    daemon.cycle = cycle
    with pytest.raises(StopLoop):
        daemon.run()
    heard = messages()
    assert heard[0] == "READY=1" and heard.count("READY=1") == 1
    assert heard.count("WATCHDOG=1") >= 3
    assert heard == before_the_hang  # not a word during the hang
