"""Server hardening, black box over HTTPS against `tern-server serve` on its defaults: a
device takeover through a second key, identities the database cannot index, input that is
not Unicode, and an upload killed with its server."""
import http.client
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import requests

from server.worker import BUFFERED_BODY_BYTES
from testkit import wait_for
from testkit.devices import SimulatedDevice
from testkit.live_server import LiveServer

AUTH = "/api/devices/v1/authentication/auth_requests"
NEXT = "/api/devices/v2/deployments/device/deployments/next"


def authenticate(live_server, device: SimulatedDevice) -> requests.Response:
    body, headers = device.auth_request()
    response = requests.post(live_server.url + AUTH, data=body, headers=headers,
                             verify=live_server.live.certificate, timeout=30)
    if response.status_code == 200:
        device.token = response.text
    return response


def poll(live_server, device: SimulatedDevice) -> int:
    return requests.post(live_server.url + NEXT, json={"device_provides": {
        "device_type": "qemux86-64"}}, headers=device.headers,
        verify=live_server.live.certificate, timeout=30).status_code


def cli_failure(live_server, *args: str) -> str:
    """A CLI command that must fail: its one line of error."""
    result = subprocess.run(
        [sys.executable, "-m", "server", "--server", live_server.url, "--token",
         live_server.token, "--ca-cert", str(live_server.live.certificate), *args],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


def api(live_server, method: str, path: str, **options):
    response = requests.request(method, f"{live_server.url}/api/management/v1{path}",
                                headers={"Authorization": f"Bearer {live_server.token}"},
                                verify=live_server.live.certificate, timeout=30, **options)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_second_key_cannot_take_a_device_over(live_server):
    device = SimulatedDevice({"mac": "52:54:00:ee:00:01"})
    assert authenticate(live_server, device).status_code == 401
    [pending] = api(live_server, "GET", "/devices", params={"status": "pending"})
    live_server.cli("devices", "accept", pending["id"])  # its only key: no choice to make
    assert authenticate(live_server, device).status_code == 200
    assert poll(live_server, device) == 204

    attacker = SimulatedDevice(device.identity)
    assert authenticate(live_server, attacker).status_code == 401
    error = cli_failure(live_server, "devices", "accept", pending["id"])
    assert error.startswith("Error: 409: ") and "auth_id" in error
    assert poll(live_server, device) == 204
    assert authenticate(live_server, attacker).status_code == 401

    # Had the operator picked the wrong key, the device's week-long token dies at once, and
    # so does the impostor's when the operator puts it right.
    own, other = (key["id"] for key in api(live_server, "GET", f"/devices/{pending['id']}")[
        "auth_sets"])
    api(live_server, "PUT", f"/devices/{pending['id']}/status",
        json={"status": "accepted", "auth_id": other})
    assert poll(live_server, device) == 401
    assert authenticate(live_server, attacker).status_code == 200
    live_server.cli("devices", "accept", pending["id"], "--auth-id", own)
    assert poll(live_server, attacker) == 401
    assert authenticate(live_server, device).status_code == 200
    assert poll(live_server, device) == 204


def test_identities_are_capped_and_large_ones_stored_on_every_database(live_server):
    large = SimulatedDevice({"mac": "52:54:00:ee:00:02",
                             "serial": secrets.token_urlsafe(2700)}, "ecdsa")
    assert authenticate(live_server, large).status_code == 401  # was 500 on PostgreSQL
    assert authenticate(live_server, large).status_code == 401
    too_large = SimulatedDevice({"mac": "52:54:00:ee:00:03", "serial": "s" * 5000}, "ecdsa")
    response = authenticate(live_server, too_large)
    assert response.status_code == 400 and "identity data" in response.json()["error"]


def test_strings_that_are_not_unicode_and_bad_download_links_are_4xx(live_server):
    device = SimulatedDevice({"mac": "52:54:00:ee:00:04\ud800"}, "ecdsa")
    response = authenticate(live_server, device)
    assert response.status_code == 400 and "not valid Unicode" in response.json()["error"]
    response = requests.get(f"{live_server.url}/api/devices/v1/deployments/download/x",
                            params={"expire": "²", "signature": "é"},
                            verify=live_server.live.certificate, timeout=30)
    assert response.status_code == 403
    assert not [d for d in api(live_server, "GET", "/devices")  # nothing of it was stored
                if d["identity_data"]["mac"].startswith("52:54:00:ee:00:04")]


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def test_an_upload_killed_with_its_server_is_swept_at_the_next_start(tmp_path):
    data = tmp_path / "data"
    server = LiveServer(data, workers=1).start()
    subprocess.run(server.command("user", "create", "admin@example.com"), check=True,
                   capture_output=True, env={**os.environ, "TERN_PASSWORD": "pw-123456789"})
    token = requests.post(f"{server.url}/api/management/v1/auth/login",
                          auth=("admin@example.com", "pw-123456789"),
                          verify=server.certificate, timeout=30).json()["token"]
    context = ssl.create_default_context(cafile=server.certificate)
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
    connection.putrequest("POST", "/api/management/v1/artifacts")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    # More than serve's front buffers before a thread takes the request (BUFFERED_BODY_BYTES):
    # the upload streams into its staged file; the rest never comes.
    first = b"x" * (2 * BUFFERED_BODY_BYTES)
    connection.send(b"%x\r\n%s\r\n" % (len(first), first))
    staged = wait_for(lambda: list((data / "artifacts").glob(".upload-*")), timeout=30)
    assert len(staged) == 1

    processes = [server.process.pid, *_children(server.process.pid)]
    for pid in reversed(processes):  # kill -9, workers first: nothing gets to clean up
        os.kill(pid, signal.SIGKILL)
    server.process.wait()
    time.sleep(0.5)
    connection.close()
    assert staged[0].exists()

    restarted = LiveServer(data, workers=1).start()
    try:
        assert list((data / "artifacts").glob(".upload-*")) == []
    finally:
        restarted.stop()
