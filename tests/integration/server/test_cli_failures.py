"""The `tern-server` executable as operators run it, against a real `tern-server serve`: every
failure is one line on stderr and exit status 1, never a traceback; and the commands that
mirror the API's deployment list and device decommission."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from testkit import free_port
from testkit.admin import ServerAdmin
from testkit.devices import SimulatedDevice
from testkit.live_server import LiveServer

from .conftest import tern_artifact

pytestmark = pytest.mark.slow

TERN_SERVER = str(Path(sys.executable).with_name("tern-server"))


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("cli") / "data").start()
    try:
        yield ServerAdmin(live)
    finally:
        live.stop()


def tern_server(*args: str) -> subprocess.CompletedProcess:
    """The installed executable, with none of the caller's TERN_* or CA bundle settings."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("TERN_") and name not in (
                       "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")}
    return subprocess.run([TERN_SERVER, *args], capture_output=True, text=True,
                          env={**environment, "TERN_PASSWORD": "wrong password"}, timeout=60)


def remote(admin: ServerAdmin, *args: str) -> list[str]:
    return ["--server", admin.live.url, "--token", admin.token, "--ca-cert",
            str(admin.live.certificate), *args]


def assert_fails_in_one_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr


def test_an_untrusted_certificate_is_one_line_naming_the_fix(admin):
    for args in (["--token", admin.token, "devices", "list"], ["user", "login", "x@example.com"]):
        result = tern_server("--server", admin.live.url, *args)
        assert_fails_in_one_line(result, f"TLS verification of {admin.live.url} failed: ")
        assert "--ca-cert" in result.stderr


def test_refusals_of_the_server_are_one_line_with_the_status_and_its_error(admin, tmp_path):
    not_an_artifact = tmp_path / "junk.mender"
    not_an_artifact.write_bytes(b"junk" * 1000)
    cases = [
        (remote(admin, "devices", "decommission", "no-such-device", "--yes"),
         "Error: 404: no device no-such-device"),
        (remote(admin, "artifacts", "upload", str(not_an_artifact)),
         "Error: 400: invalid artifact: "),
        (["--server", admin.live.url, "--token", "not-a-token", "--ca-cert",
          str(admin.live.certificate), "deployments", "list"], "Error: 401: "),
        (["--server", admin.live.url, "--ca-cert", str(admin.live.certificate), "user",
          "login", "admin@example.com"], "Error: 401: wrong email or password"),
    ]
    for args, expected in cases:
        assert_fails_in_one_line(tern_server(*args), expected)


def test_a_closed_port_and_a_silent_server_are_one_line():
    closed = f"https://127.0.0.1:{free_port()}"
    assert_fails_in_one_line(tern_server("--server", closed, "deployments", "list"),
                             f"connection to {closed} failed: Connection refused")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        assert_fails_in_one_line(
            tern_server("--server", url, "--timeout", "1", "deployments", "list"),
            f"{url} did not answer within 1 s")


def test_local_failures_are_one_line(tmp_path):
    assert_fails_in_one_line(tern_server("--data-dir", str(tmp_path / "none"), "devices", "list"),
                             "is not a data directory; run `tern-server --data-dir")
    assert_fails_in_one_line(tern_server("artifacts", "upload", str(tmp_path / "none.mender")),
                             "none.mender' does not exist")


def test_deployments_list_and_devices_decommission_over_https(admin, tmp_path):
    url = f"{admin.live.url}/api/management/v1"

    def api(method: str, path: str, **options) -> requests.Response:
        return requests.request(method, url + path, verify=admin.live.certificate, timeout=30,
                                headers={"Authorization": f"Bearer {admin.token}"}, **options)

    device = api("POST", "/devices", json={"identity_data": {"mac": "to-retire"},
                                           "pubkey": SimulatedDevice({}).pubkey}).json()
    result = tern_server(*remote(admin, "devices", "decommission", device["id"], "--yes"))
    assert result.returncode == 0 and result.stdout == f"{device['id']}: decommissioned\n"
    assert api("GET", f"/devices/{device['id']}").status_code == 404

    artifact = tern_artifact(tmp_path, "app-1.0")
    assert api("POST", "/artifacts", data=artifact.read_bytes()).status_code == 201
    device = api("POST", "/devices", json={"identity_data": {"mac": "in-service"},
                                           "pubkey": SimulatedDevice({}).pubkey}).json()
    api("PUT", f"/devices/{device['id']}/status", json={"status": "accepted"})
    deployment = api("POST", "/deployments", json={
        "name": "first", "artifact_name": "app-1.0", "all_devices": True}).json()
    listed = tern_server(*remote(admin, "deployments", "list")).stdout
    assert listed == f"{deployment['id']}  first  app-1.0  pending  (pending 1)\n"
