"""The daemon replay's server (testkit.replay): a running tern-server's data directory copied
as it stood, then served on the recorded port with the same certificate and secret (the
device's pinned certificate and its token still hold), each time as the snapshot was."""
import json
import subprocess
import sys

import pytest

from qemu.device import free_port
from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer
from testkit.replay import server_from, snapshot_server

pytestmark = pytest.mark.slow


def users(live: LiveServer) -> list[str]:
    listed = subprocess.run([sys.executable, "-m", "server", "--data-dir", str(live.data_dir),
                             "user", "list", "--json"], check=True, capture_output=True,
                            text=True).stdout
    return sorted(user["email"] for user in json.loads(listed))


def test_a_snapshot_is_served_on_its_port_as_it_was_each_time(tmp_path):
    with LiveServer(tmp_path / "recorded", names=("10.0.2.2",)) as recorded:
        admin = ServerAdmin(recorded)
        snapshot_server(recorded.data_dir, tmp_path / "snapshot")
        admin.cli("user", "create", "after@example.com")  # not in the snapshot
    port = free_port()
    for _ in range(2):
        with server_from(tmp_path / "snapshot", port) as live:
            assert live.port == port
            assert live.certificate.read_bytes() == recorded.certificate.read_bytes()
            admin.live = live  # the token the recorded server gave is good here
            assert admin.get("/devices") == []
            assert users(live) == ["admin@example.com"]
            admin.cli("user", "create", "during@example.com")  # a boot's changes stay there
            assert users(live) == ["admin@example.com", "during@example.com"]
