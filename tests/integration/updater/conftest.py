"""A live server and `tern-updater daemon` processes for the daemon's tests on
the simulated device of testkit.host_device."""
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.host_device import new_device
from testkit.live_server import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("daemon-server") / "data") as live:
        yield ServerAdmin(live)


class Daemon:
    """`tern-updater daemon` in a subprocess, killed at the end whatever happens."""

    def __init__(self, device):
        self.device = device
        self.log = device.root / "daemon.log"
        self.process = None

    def start(self) -> "Daemon":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "updater.cli", "--config", str(self.device.toml),
                 "daemon"], stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def daemons():
    started = []
    yield lambda device: started.append(Daemon(device).start()) or started[-1]
    for daemon in started:
        daemon.stop()


def register(server: ServerAdmin, daemons, device, mac: str) -> str:
    daemon = daemons(device)
    pending = wait_for(lambda: server.device({"mac": mac}), timeout=30,
                       what="the auth request")
    assert pending["status"] == "pending"
    server.cli("devices", "accept", pending["id"])
    wait_for(lambda: server.attributes(pending["id"]).get("artifact_name") == "factory",
             timeout=30, what="the inventory")
    assert server.attributes(pending["id"])["device_type"] == "qemu-arm64"
    assert (Path(device.settings["data_dir"]) / "device-key.pem").exists()
    return pending["id"], daemon


def deploy(server: ServerAdmin, artifact: Path, name: str, device_id: str) -> str:
    server.cli("artifacts", "upload", str(artifact))
    return server.cli("deployments", "create", "--name", name, "--artifact-name",
                      name, "--device", device_id)["id"]


def daemon_device(tmp_path: Path, server: ServerAdmin, mac: str):
    """A host device whose daemon talks to `server` (identity mac=`mac`), polling fast."""
    return new_device(
        tmp_path / mac, server_url=server.live.url,
        server_certificate=str(server.live.certificate), identity_script=f"echo mac={mac}",
        poll_interval=0.5, inventory_interval=3600.0, retry_interval=1.0,
        reboot_command="kill -KILL $PPID")  # the reboot ends the daemon, as a real one
