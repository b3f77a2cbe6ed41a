"""The daemon keeps the server's auth token across a reboot (`<data_dir>/auth-token.json`):
after an update's reboot it reports the result at once, without a new auth request (no
forked child signing, no round trip); a token the server no longer takes (revoked) gets a
401, the daemon authenticates afresh and the result arrives all the same. Against a live
tern-server over HTTPS, whose request log counts the auth requests."""
import json
import stat
from pathlib import Path

import pytest

from testkit import wait_for
from testkit.admin import ServerAdmin
from updater.client import AUTH

from .conftest import daemon_device, deploy, register

pytestmark = pytest.mark.slow


def through_the_reboot(server: ServerAdmin, daemons, make_artifact, device, mac: str):
    """Register the device, deploy to it, "reboot" it into the new slot and run `resume`
    as the boot does: the result waits for the next daemon. The deployment's and the
    device's ids."""
    device_id, daemon = register(server, daemons, device, mac)
    deployment = deploy(server, make_artifact(name=f"release-{mac}"), f"release-{mac}",
                        device_id)
    assert daemon.process.wait(60) == -9, daemon.log.read_text()  # "rebooted"
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    assert server.device_status(deployment, device_id) == "rebooting"
    return deployment, device_id


def kept_token(device) -> dict:
    path = Path(device.settings["data_dir"]) / "auth-token.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())


def test_the_daemon_reports_after_the_reboot_without_a_new_auth_request(
        server, daemons, make_artifact, tmp_path):
    device = daemon_device(tmp_path, server, "token-kept")
    deployment, device_id = through_the_reboot(server, daemons, make_artifact, device,
                                               "token-kept")
    assert kept_token(device)["server_url"] == server.live.url
    seen = len(server.live.logged_requests())

    daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=30,
             what="success")
    since = server.live.logged_requests()[seen:]
    assert [entry for entry in since if entry["path"] == AUTH] == []
    assert {"path": f"/api/devices/v1/deployments/device/deployments/{deployment}/status",
            "status": 204, "device_id": device_id} in [
        {name: entry.get(name) for name in ("path", "status", "device_id")} for entry in since]


def test_a_revoked_token_costs_one_fresh_authentication_and_the_result_arrives(
        server, daemons, make_artifact, tmp_path):
    device = daemon_device(tmp_path, server, "token-revoked")
    deployment, device_id = through_the_reboot(server, daemons, make_artifact, device,
                                               "token-revoked")
    revoked = kept_token(device)["token"]
    assert server.api("DELETE", f"/devices/{device_id}/tokens")["revoked"] >= 1
    seen = len(server.live.logged_requests())

    daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=30,
             what="success")
    since = [(entry["path"], entry["status"]) for entry in server.live.logged_requests()[seen:]
             if entry["path"].startswith("/api/devices/")]  # the daemon's, not the test's
    auths = [index for index, (path, _) in enumerate(since) if path == AUTH]
    assert [since[index][1] for index in auths] == [200], since  # one, accepted
    assert auths[0] > 0 and since[auths[0] - 1][1] == 401, since  # the kept token, refused
    assert kept_token(device)["token"] != revoked
    assert device.last_result()["status"] == "success"
