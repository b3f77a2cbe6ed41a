"""Dynamic groups and events against a real `tern-server serve` (gunicorn, HTTPS, two workers
each running the webhook loop), on SQLite and PostgreSQL, driven by the CLI: a deployment to
a dynamic group reaches a device that joins it later; the event stream resumes after
Last-Event-ID; a webhook receiver that refuses the first attempts gets every event once, in
order, signed. Then two instances on one PostgreSQL deliver each event once."""
import json
import time

import pytest
import requests

from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.devices import AUTH_PATH, SimulatedDevice
from testkit.live_server import LiveServer
from testkit.webhook_receiver import WebhookReceiver

from .conftest import NEXT, make_artifact

pytestmark = pytest.mark.slow

SECRET = "a webhook secret of some length"
INVENTORY = "/api/devices/v1/inventory/device/attributes"
STATUS = "/api/devices/v1/deployments/device/deployments/{}/status"


def join(operator: ServerAdmin, mac: str, **inventory) -> SimulatedDevice:
    """A device that asks to join, is accepted, and reports its inventory."""
    url, verify = operator.url, operator.live.certificate
    device = SimulatedDevice({"mac": mac}, "ed25519")
    body, headers = device.auth_request()
    assert requests.post(url + AUTH_PATH, data=body, headers=headers,
                         verify=verify).status_code == 401
    [pending] = [d for d in operator.get("/devices") if d["identity_data"] == device.identity]
    device.id = pending["id"]
    operator.api("PUT", f"/devices/{device.id}/status", json={"status": "accepted"})
    response = requests.post(url + AUTH_PATH, data=body, headers=headers, verify=verify)
    device.token = response.text
    attributes = [{"name": "device_type", "value": "qemux86-64"},
                  {"name": "artifact_name", "value": "release-0"},
                  *({"name": k, "value": v} for k, v in inventory.items())]
    assert requests.put(url + INVENTORY, json=attributes, headers=device.headers,
                        verify=verify).status_code == 200
    return device


def next_deployment(operator: ServerAdmin, device: SimulatedDevice) -> str | None:
    response = requests.post(operator.url + NEXT, json={"device_provides": {
        "device_type": "qemux86-64", "artifact_name": "release-0"}}, headers=device.headers,
        verify=operator.live.certificate)
    return response.json()["id"] if response.status_code == 200 else None


def report(operator: ServerAdmin, device: SimulatedDevice, deployment_id: str, status: str):
    response = requests.put(operator.url + STATUS.format(deployment_id), json={"status": status},
                            headers=device.headers, verify=operator.live.certificate)
    assert response.status_code == 204


def stream(operator: ServerAdmin, until: str, **headers) -> list[dict]:
    """Read the event stream (from the start, or after Last-Event-ID) until an event of type
    `until`."""
    found = []
    with requests.get(f"{operator.url}/api/management/v1/events/stream",
                      params={"after": 0}, stream=True, timeout=30,
                      headers={"Authorization": f"Bearer {operator.token}", **headers},
                      verify=operator.live.certificate) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        fields = {}
        for line in response.iter_lines(decode_unicode=True):
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                found.append(json.loads(fields["data"]))
                if found[-1]["type"] == until:
                    return found
            fields = {}
    raise AssertionError(f"the stream ended before {until}: {found}")


def test_dynamic_group_deployment_events_and_webhook(live_server, tmp_path):
    operator = live_server
    with WebhookReceiver(failures=2) as receiver:
        hook = operator.cli("webhooks", "add", receiver.url, "--secret", SECRET)
        assert hook["secret"] == SECRET
        group = operator.cli("groups", "create", "big", "--where", "ram_mb>=1024",
                             "--where", "region in eu,us")
        assert group["filter"] == [
            {"attribute": "ram_mb", "type": "$gte", "value": 1024},
            {"attribute": "region", "type": "$in", "value": ["eu", "us"]}]
        member = join(operator, "52:54:00:e0:00:01", ram_mb="2048", region="eu")
        outsider = join(operator, "52:54:00:e0:00:02", ram_mb="512", region="eu")
        operator.cli("artifacts", "upload", str(make_artifact(tmp_path)))
        deployment = operator.cli("deployments", "create", "--name", "big ones",
                                  "--artifact-name", "app-1.0", "--dynamic-group", "big")
        assert deployment["device_count"] == 1 and deployment["open_to_joiners"]
        [listed] = [g for g in operator.cli("groups", "list") if g["name"] == "big"]
        assert listed["devices"] == 1

        assert next_deployment(operator, outsider) is None
        joiner = join(operator, "52:54:00:e0:00:03", ram_mb="4096", region="us")
        for device in (member, joiner):
            assert next_deployment(operator, device) == deployment["id"]
            report(operator, device, deployment["id"], "downloading")
            report(operator, device, deployment["id"], "success")
        assert next_deployment(operator, outsider) is None
        shown = operator.cli("groups", "show", "big")
        assert sorted(shown["device_ids"]) == sorted([member.id, joiner.id])

        events = operator.get("/events")
        assert [e["type"] for e in events] == [
            "device.accepted", "device.accepted", "deployment.created",
            "deployment.phase_started",
            "device.accepted", "deployment.device_added",  # the joiner: accepted, inventory
            "deployment.device_status", "deployment.device_finished",
            "deployment.device_status", "deployment.device_finished", "deployment.finished"]
        added = next(e for e in events if e["type"] == "deployment.device_added")
        assert added["data"] == {"deployment_id": deployment["id"], "device_id": joiner.id,
                                 "phase": 1}  # the last (and only) phase

        # The stream, from the start, then resumed after the third event.
        assert stream(operator, "deployment.finished") == events
        assert stream(operator, "deployment.finished",
                      **{"Last-Event-ID": str(events[2]["id"])}) == events[3:]

        # The webhook: every event once, in order, signed, after two refused attempts.
        wait_for(lambda: len(receiver.received) >= len(events), timeout=60,
                 what="the webhook deliveries")
        time.sleep(2)  # anything delivered twice would arrive by now
        assert receiver.events(SECRET) == events
        assert receiver.attempts == len(events) + 2
        [state] = operator.cli("webhooks", "list")
        assert state["delivered"] == len(events) and state["failures"] == 0


def test_a_malformed_filter_is_one_line_from_the_cli(live_server):
    result = live_server.cli
    with pytest.raises(RuntimeError) as error:
        result("groups", "create", "bad", "--where", "ram_mb ~ 3")
    assert "expected NAME=VALUE" in str(error.value)
    with pytest.raises(RuntimeError) as error:
        result("groups", "create", "bad", "--filter-json", '[{"attribute": "a", "type": "$x"}]')
    assert "400: filter[0]: type must be one of" in str(error.value)
    assert "Traceback" not in str(error.value)


def test_two_instances_deliver_each_event_once(postgres, tmp_path):
    """Four delivery loops (two instances, two workers each) on one PostgreSQL."""
    database_url = postgres.create_database("tern_events_two_instances")
    servers = [LiveServer(tmp_path / name / "data", workers=2, database_url=database_url)
               for name in ("host1", "host2")]
    with servers[0], servers[1], WebhookReceiver() as receiver:
        operator = ServerAdmin(servers[0])
        operator.api("POST", "/webhooks", json={"url": receiver.url, "secret": SECRET})
        device = join(operator, "52:54:00:e0:01:01")
        operator.cli("artifacts", "upload", str(make_artifact(tmp_path)))
        for n in range(10):
            created = operator.api("POST", "/deployments", json={
                "name": f"d{n}", "artifact_name": "app-1.0", "devices": [device.id]})
            operator.api("PUT", f"/deployments/{created['id']}/status",
                         json={"status": "aborted"})
        events = operator.get("/events")
        # accepted, then ten times: created, phase started, the device finished (aborted)
        # and the deployment finished
        assert len(events) == 41
        wait_for(lambda: len(receiver.received) >= len(events), timeout=60,
                 what="the webhook deliveries")
        time.sleep(3)
        assert receiver.events(SECRET) == events


def test_a_left_stream_frees_its_slot_at_once_and_a_full_process_says_so(tmp_path):
    """One worker of 4 threads: 3 streams (all threads but one). A fourth is a 503 with the
    JSON error and Retry-After, while the thread left still answers; a client that goes
    away frees its slot within a second or two, long before the heartbeat's write (5 s,
    and a write to a closed connection fails only at the second) would find it."""
    with LiveServer(tmp_path / "data", workers=1, threads=4) as live:
        admin = ServerAdmin(live)
        url = f"{live.url}/api/management/v1/events/stream"
        headers = {"Authorization": f"Bearer {admin.token}"}

        def open_stream() -> requests.Response:
            return requests.get(url, headers=headers, verify=live.certificate, stream=True,
                                timeout=10)

        streams = [open_stream() for _ in range(3)]
        # Kept: a line iterator that is dropped closes its connection (urllib3 closes a
        # chunked response left in the middle), which the server rightly takes as gone.
        lines = [stream.iter_lines() for stream in streams]
        try:
            for stream, stream_lines in zip(streams, lines, strict=True):
                assert stream.status_code == 200
                assert next(stream_lines) == b"retry: 2000"
            full = open_stream()
            assert full.status_code == 503 and full.headers["Retry-After"] == "5"
            assert "too many event streams" in full.json()["error"]
            assert requests.get(f"{live.url}/api/health", verify=live.certificate,
                                timeout=5).status_code == 204
            streams.pop(0).close()  # the page left: its connection closed
            left = time.monotonic()
            replacement = wait_for(lambda: (r := open_stream()).status_code == 200 and r,
                                   timeout=3, interval=0.2, what="a slot to free")
            print(f"a slot was free again {time.monotonic() - left:.1f} s after its "
                  "client left")
            streams.append(replacement)
        finally:
            for stream in streams:
                stream.close()
