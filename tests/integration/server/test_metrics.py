"""/metrics from a real gunicorn with 2 workers: the numbers add up over the workers and move
with what devices do; every request is one JSON log line."""
import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from testkit.admin import ServerAdmin
from testkit.devices import AUTH_PATH, SimulatedDevice
from testkit.live_server import LiveServer

from .conftest import NEXT, PROVIDES, make_artifact

pytestmark = pytest.mark.slow

POLL_ENDPOINT = "/api/devices/v2/deployments/device/deployments/next"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("metrics") / "data", workers=2) as live:
        yield live


def scrape(server, token) -> dict:
    """Samples by (name, sorted labels); several scrapes, as each may land on either worker,
    must agree."""
    answers = []
    for _ in range(4):
        response = requests.get(f"{server.url}/metrics", verify=server.certificate,
                                headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        answers.append({(s.name, tuple(sorted(s.labels.items()))): s.value
                        for family in text_string_to_metric_families(response.text)
                        for s in family.samples})
    counters = [{k: v for k, v in a.items() if k[0] in ("tern_device_polls_total",
                                                        "tern_artifact_bytes_served_total")}
                for a in answers]
    assert all(c == counters[0] for c in counters), counters
    return answers[-1]


def poll_latency_count(samples) -> float:
    return sum(v for (name, labels), v in samples.items()
               if name == "tern_request_duration_seconds_count"
               and ("endpoint", POLL_ENDPOINT) in labels)


def test_metrics_move_with_the_fleet(server, tmp_path):
    admin = ServerAdmin(server)
    assert requests.get(f"{server.url}/metrics", verify=server.certificate).status_code == 401
    before = scrape(server, admin.token)
    assert before[("tern_device_polls_total", ())] == 0
    assert before.get(("tern_devices", (("status", "pending"),)), 0) == 0

    device = SimulatedDevice({"mac": "02:00:00:00:00:99"}, "ed25519")
    body, headers = device.auth_request()
    auth = f"{server.url}{AUTH_PATH}"
    requests.post(auth, data=body, headers=headers, verify=server.certificate)
    assert scrape(server, admin.token)[("tern_devices", (("status", "pending"),))] == 1
    [pending] = admin.cli("devices", "list", "--status", "pending")
    admin.cli("devices", "accept", pending["id"])
    device.token = requests.post(auth, data=body, headers=headers,
                                 verify=server.certificate).text
    artifact = make_artifact(tmp_path)
    uploaded = admin.cli("artifacts", "upload", str(artifact))
    deployment = admin.cli("deployments", "create", "--name", "metrics", "--artifact-name",
                           "app-1.0", "--device", pending["id"])
    middle = scrape(server, admin.token)
    assert middle[("tern_devices", (("status", "accepted"),))] == 1
    assert middle[("tern_deployments", (("state", "pending"),))] == 1

    polls = 24  # each on a new connection, so both workers answer some
    for _ in range(polls):
        answer = requests.post(f"{server.url}{NEXT}", json=PROVIDES, headers=device.headers,
                               verify=server.certificate)
        assert answer.status_code == 200
    download = requests.get(answer.json()["artifact"]["source"]["uri"],
                            verify=server.certificate)
    assert len(download.content) == uploaded["size"]
    for status in ("downloading", "success"):
        requests.put(f"{server.url}/api/devices/v1/deployments/device/deployments/"
                     f"{deployment['id']}/status", json={"status": status},
                     headers=device.headers, verify=server.certificate)

    after = scrape(server, admin.token)
    assert after[("tern_device_polls_total", ())] == polls
    assert after[("tern_artifact_bytes_served_total", ())] == uploaded["size"]
    assert poll_latency_count(after) - poll_latency_count(middle) == polls
    assert after[("tern_deployments", (("state", "finished"),))] == 1
    assert after[("tern_device_deployments", (("status", "success"),))] == 1

    lines = [json.loads(line) for line in server.output.read_text().splitlines()
             if line.startswith("{")]
    poll_lines = [line for line in lines if line["path"] == POLL_ENDPOINT]
    assert len(poll_lines) == polls
    assert {line["device_id"] for line in poll_lines} == {pending["id"]}
    assert all(line["status"] == 200 and line["duration_ms"] > 0 for line in poll_lines)
