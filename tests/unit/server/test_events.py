"""Events: what deployments and devices publish, the list and the server-sent events stream
(resuming, bounds, roles), retention, and webhook deliveries (signature, order, retries,
one delivery however many loops run)."""
import base64
import json
import threading
from datetime import timedelta

import pytest

from server.database import db
from server.events import service as events
from server.events import webhooks
from server.models import Event, Webhook, utcnow
from testkit.webhook_receiver import WebhookReceiver

EVENTS = "/api/management/v1/events"
DEPLOYMENTS = "/api/management/v1/deployments"


def listed(client, admin, after: int = 0) -> list[dict]:
    response = client.get(EVENTS, query_string={"after": after}, headers=admin)
    assert response.status_code == 200, response.json
    return response.json


def test_a_deployment_tells_its_story(client, admin, fleet, upload):
    first, second = fleet.accepted("52:54:00:00:00:01"), fleet.accepted("52:54:00:00:00:02")
    upload("app-1.0")
    deployment = client.post(DEPLOYMENTS, json={"name": "d", "artifact_name": "app-1.0",
                                                "devices": [first.id, second.id]},
                             headers=admin).json
    for device, outcome in ((first, "success"), (second, "failure")):
        fleet.next(device)
        fleet.status(device, deployment["id"], "downloading")
        fleet.status(device, deployment["id"], "downloading")  # repeated: no new event
        fleet.status(device, deployment["id"], outcome)
    story = [(e["type"], e["data"].get("device_id"), e["data"].get("status"))
             for e in listed(client, admin)]
    assert story == [
        ("device.accepted", first.id, None), ("device.accepted", second.id, None),
        ("deployment.created", None, None), ("deployment.phase_started", None, None),
        ("deployment.device_status", first.id, "downloading"),
        ("deployment.device_finished", first.id, "success"),
        ("deployment.device_status", second.id, "downloading"),
        ("deployment.device_finished", second.id, "failure"),
        ("deployment.finished", None, None)]
    ids = [e["id"] for e in listed(client, admin)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e["type"] for e in listed(client, admin, after=ids[-2])] == ["deployment.finished"]
    assert all(e["data"]["deployment_id"] == deployment["id"] for e in listed(client, admin)[2:])


def test_noartifact_and_abort_are_events(client, admin, fleet, upload):
    device, other = fleet.accepted("52:54:00:00:00:01"), fleet.accepted("52:54:00:00:00:02")
    upload("app-1.0", device_types=("other-type",))
    deployment = client.post(DEPLOYMENTS, json={"name": "d", "artifact_name": "app-1.0",
                                                "devices": [device.id, other.id]},
                             headers=admin).json
    after = listed(client, admin)[-1]["id"]
    assert fleet.next(device).status_code == 204
    client.put(f"{DEPLOYMENTS}/{deployment['id']}/status", json={"status": "aborted"},
               headers=admin)
    # the device the abort ended has its event, as one that ended on its own
    assert [(e["type"], e["data"].get("device_id"), e["data"].get("status"))
            for e in listed(client, admin, after)] == [
        ("deployment.device_finished", device.id, "noartifact"),
        ("deployment.device_finished", other.id, "aborted"), ("deployment.aborted", None, None)]


def test_a_decommissioned_device_ends_its_deployments_with_their_events(client, admin, fleet,
                                                                       upload):
    device, other = fleet.accepted("52:54:00:00:00:01"), fleet.accepted("52:54:00:00:00:02")
    upload("app-1.0")
    alone, shared = (client.post(DEPLOYMENTS, json={
        "name": name, "artifact_name": "app-1.0", "devices": targets}, headers=admin).json["id"]
        for name, targets in (("alone", [device.id]), ("shared", [device.id, other.id])))
    after = listed(client, admin)[-1]["id"]
    assert client.delete(f"/api/management/v1/devices/{device.id}",
                         headers=admin).status_code == 204
    assert [(e["type"], e["data"].get("deployment_id"), e["data"].get("device_id"),
             e["data"].get("status")) for e in listed(client, admin, after)] == [
        ("deployment.device_finished", alone, device.id, "decommissioned"),
        ("deployment.finished", alone, None, None),  # it was its last device
        ("deployment.device_finished", shared, device.id, "decommissioned"),
        ("device.decommissioned", None, device.id, None)]


def read_stream(client, headers, **query) -> list[dict]:
    """The events of one stream's life (short in these tests), and its raw lines."""
    response = client.get(f"{EVENTS}/stream", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    body = response.get_data(as_text=True)
    assert body.startswith("retry: ")
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if line and not line.startswith(":"))
        if "data" in fields:
            event = json.loads(fields["data"])
            assert fields["id"] == str(event["id"]) and fields["event"] == event["type"]
            found.append(event)
    return found


def test_the_stream_resumes_after_last_event_id(client, admin, fleet):
    fleet.accepted("52:54:00:00:00:01")
    fleet.accepted("52:54:00:00:00:02")
    everything = listed(client, admin)
    assert read_stream(client, admin, after=0) == everything
    resumed = read_stream(client, {**admin, "Last-Event-ID": str(everything[0]["id"])}, after=0)
    assert resumed == everything[1:]  # the header wins over `after`
    assert read_stream(client, admin) == []  # from now on
    assert read_stream(client, admin, after=0, types="deployment.created") == []
    for bad in ("x", "-1", "1" * 30):
        response = client.get(f"{EVENTS}/stream", headers={**admin, "Last-Event-ID": bad})
        assert response.status_code == 400 and "event ids" in response.json["error"]


def test_streams_are_bounded_per_process(app, client, admin):
    slots = app.extensions["tern.event_streams"]
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    assert taken == app.config["EVENT_STREAMS"]
    try:
        response = client.get(f"{EVENTS}/stream", headers=admin)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "too many event streams" in response.json["error"]
    finally:
        for _ in range(taken):
            slots.release()
    assert client.get(f"{EVENTS}/stream", headers=admin).status_code == 200


def test_who_may_read_events_and_manage_webhooks(client, admin, fleet):
    from server.users.service import create_user

    with client.application.app_context():
        create_user("viewer@example.com", "viewer password 1", role="read-only")
    credentials = base64.b64encode(b"viewer@example.com:viewer password 1").decode()
    token = client.post("/api/management/v1/auth/login",
                        headers={"Authorization": f"Basic {credentials}"}).json["token"]
    viewer = {"Authorization": f"Bearer {token}"}
    assert client.get(EVENTS, headers=viewer).status_code == 200
    assert client.get(f"{EVENTS}/stream", headers=viewer).status_code == 200
    assert client.get("/api/management/v1/webhooks", headers=viewer).status_code == 403
    assert client.get(EVENTS).status_code == 401
    device = fleet.accepted()
    assert client.get(f"{EVENTS}/stream", headers=device.headers).status_code == 403


def test_old_events_are_deleted(app, client, admin, fleet):
    fleet.accepted()
    with app.app_context():
        old = Event(type="device.accepted", data={}, at=utcnow() - timedelta(days=8))
        db.session.add(old)
        db.session.commit()
        assert events.purge() == 1
        assert db.session.query(Event).count() == 1
        app.config["EVENT_RETENTION_DAYS"] = 0
        assert events.purge(utcnow() + timedelta(seconds=1)) == 1


@pytest.fixture
def receiver():
    receivers = []

    def make(failures: int = 0) -> WebhookReceiver:
        receivers.append(WebhookReceiver(failures))
        return receivers[-1]
    yield make
    for each in receivers:
        each.close()


def test_webhook_deliveries_are_signed_ordered_and_retried(app, client, admin, fleet, receiver):
    hook = receiver(failures=2)
    created = client.post("/api/management/v1/webhooks", json={"url": hook.url},
                          headers=admin)
    assert created.status_code == 201
    secret = created.json["secret"]
    assert "secret" not in client.get("/api/management/v1/webhooks", headers=admin).json[0]
    fleet.accepted("52:54:00:00:00:01")
    fleet.accepted("52:54:00:00:00:02")
    app.config["WEBHOOK_BACKOFF_SECONDS"] = 0
    with app.app_context():
        assert webhooks.deliver_due() == 0  # the receiver refuses the first attempt
        shown = webhooks.webhook_view(db.session.get(Webhook, created.json["id"]))
        assert shown["failures"] == 1 and shown["last_error"] == "HTTP 503"
        assert webhooks.deliver_due() == 0
        assert webhooks.deliver_due() == 2
        assert webhooks.deliver_due() == 0  # nothing left
    assert hook.attempts == 4
    expected = listed(client, admin)
    delivered = hook.events(secret)
    assert delivered == expected


def test_backoff_waits_before_the_next_attempt(app, client, admin, fleet, receiver):
    hook = receiver(failures=1)
    client.post("/api/management/v1/webhooks", json={"url": hook.url}, headers=admin)
    fleet.accepted()
    with app.app_context():
        assert webhooks.deliver_due() == 0
        assert webhooks.deliver_due() == 0  # not due yet: 2 s of backoff
        assert hook.attempts == 1
        webhook = db.session.query(Webhook).one()
        assert timedelta(seconds=1) < webhook.next_attempt_at - utcnow() <= timedelta(seconds=2)


def test_concurrent_loops_deliver_each_event_once(app, client, admin, fleet, receiver):
    hooks = [receiver() for _ in range(3)]
    for hook in hooks:
        client.post("/api/management/v1/webhooks", json={"url": hook.url,
                                                         "types": ["device.accepted"]},
                    headers=admin)
    for n in range(5):
        fleet.accepted(f"52:54:00:00:00:{n:02x}")
    errors = []

    def loop():
        try:
            with app.app_context():
                for _ in range(5):
                    webhooks.deliver_due()
        except Exception as error:  # noqa: BLE001 - handed to the test
            errors.append(error)
    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for hook in hooks:
        ids = [json.loads(body)["id"] for _, body in hook.received]
        assert len(ids) == 5 and ids == sorted(set(ids))


@pytest.mark.parametrize("body, message", [
    ({"url": "ftp://example.com/x"}, "url must be an http"),
    ({"url": "http://"}, "url must be an http"),
    ({"url": "http://example.com", "secret": "short"}, "secret must have 16"),
    ({"url": "http://example.com", "types": []}, "types must be"),
    ({"url": "http://example.com", "types": [1]}, "types must be"),
])
def test_bad_webhooks_are_400(client, admin, body, message):
    response = client.post("/api/management/v1/webhooks", json=body, headers=admin)
    assert response.status_code == 400 and message in response.json["error"]


def test_event_settings_come_from_config_json(tmp_path):
    from server.config import data_dir_config

    (tmp_path / "config.json").write_text(json.dumps({
        "event_retention_days": 30, "event_streams": 8, "event_stream_seconds": 60,
        "webhook_backoff_seconds": 5}))
    (tmp_path / "secret.key").write_text("s" * 40)
    config = data_dir_config(tmp_path)
    assert (config["EVENT_RETENTION_DAYS"], config["EVENT_STREAMS"],
            config["EVENT_STREAM_SECONDS"], config["WEBHOOK_BACKOFF_SECONDS"]) == (30, 8, 60, 5)


def test_devices_finishing_at_once_finish_the_deployment_once(app, client, admin, fleet, upload):
    devices = [fleet.accepted(f"52:54:00:00:01:{n:02x}") for n in range(6)]
    upload("app-1.0")
    deployment = client.post(DEPLOYMENTS, json={"name": "d", "artifact_name": "app-1.0",
                                                "devices": [d.id for d in devices]},
                             headers=admin).json
    for device in devices:
        fleet.next(device)
    barrier, answers = threading.Barrier(len(devices)), []

    def finish(device):
        barrier.wait()
        answers.append(app.test_client().put(
            f"/api/devices/v1/deployments/device/deployments/{deployment['id']}/status",
            json={"status": "success"}, headers=device.headers).status_code)
    threads = [threading.Thread(target=finish, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [204] * len(devices)
    kinds = [e["type"] for e in listed(client, admin)]
    assert kinds.count("deployment.device_finished") == len(devices)
    assert kinds.count("deployment.finished") == 1 and kinds[-1] == "deployment.finished"
