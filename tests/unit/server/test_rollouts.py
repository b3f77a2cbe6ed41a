"""Rollouts (issue 18 §1): phases assigned once by hash order and adding up exactly, start
conditions (time, success threshold, release), the failure threshold's auto-pause, resume
(with a fixed artifact), retries, schedules and maintenance windows; every transition in the
audit log with why. Each test runs on SQLite and PostgreSQL (the `app` fixture)."""
import base64
import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, event, text

from server.deployments import service
from server.deployments.service import PhasePlan, in_window, phase_sizes
from server.errors import ApiError
from server.migrate import alembic_config
from server.models import Deployment

DEPLOYMENTS = "/api/management/v1/deployments"


@pytest.fixture
def devices(fleet):
    """`count` accepted devices (Ed25519 keys: quick to make)."""
    def devices(count: int) -> list:
        return [fleet.accepted(f"52:54:00:00:01:{index:02x}", "ed25519")
                for index in range(count)]
    return devices


@pytest.fixture
def deploy(client, admin):
    def deploy(targets, artifact_name: str = "app-1.0", **options) -> dict:
        response = client.post(DEPLOYMENTS, json={
            "name": "rollout", "artifact_name": artifact_name,
            "devices": [d.id for d in targets], **options}, headers=admin)
        assert response.status_code == 201, response.json
        return response.json
    return deploy


def shown(client, admin, deployment: dict) -> dict:
    return client.get(f"{DEPLOYMENTS}/{deployment['id']}", headers=admin).json


def phases_of(client, admin, deployment: dict) -> dict[str, int]:
    """device id -> its phase (1-based), as the API shows it."""
    return {d["device_id"]: d["phase"] for d in client.get(
        f"{DEPLOYMENTS}/{deployment['id']}/devices", headers=admin).json}


def audit(client, admin, deployment: dict) -> list[dict]:
    """The deployment's audit entries, oldest first."""
    entries = client.get("/api/management/v1/audit", headers=admin).json
    return [e for e in reversed(entries) if e["target"] == deployment["id"]]


def by_phase(targets, phases: dict[str, int], number: int) -> list:
    return [d for d in targets if phases[d.id] == number]


def run_to(fleet, device, deployment: dict, result: str) -> None:
    assert fleet.next(device).json["id"] == deployment["id"]
    assert fleet.status(device, deployment["id"], "downloading").status_code == 204
    assert fleet.status(device, deployment["id"], result).status_code == 204


@pytest.mark.parametrize("total, plans, sizes", [
    (10, [PhasePlan(percent=33), PhasePlan(percent=33), PhasePlan()], [3, 4, 3]),
    (10, [PhasePlan(percent=33)] * 3 + [PhasePlan()], [3, 4, 3, 0]),
    (7, [PhasePlan(percent=50), PhasePlan(percent=50)], [4, 3]),
    (50, [PhasePlan(size=5), PhasePlan(percent=50), PhasePlan()], [5, 25, 20]),
    (1000, [PhasePlan(percent=1), PhasePlan(percent=9), PhasePlan(percent=90)], [10, 90, 900]),
])
def test_phase_sizes_add_up_to_the_target_exactly(total, plans, sizes):
    if 0 in sizes:  # 3 × 33% of 10 leave the last phase no device
        with pytest.raises(ApiError, match=f"phase {sizes.index(0) + 1} would have no devices"):
            phase_sizes(plans, total)
        return
    assert phase_sizes(plans, total) == sizes


def test_phase_sizes_that_do_not_add_up_are_refused():
    with pytest.raises(ApiError, match="the phases have 12 devices in all, the deployment 10"):
        phase_sizes([PhasePlan(size=2), PhasePlan(size=10)], 10)
    with pytest.raises(ApiError, match="phase 2 would have no devices"):
        phase_sizes([PhasePlan(size=10), PhasePlan()], 10)


def test_devices_are_split_once_in_hash_order(client, admin, upload, devices, deploy):
    upload("app-1.0")
    targets = devices(10)
    deployment = deploy(targets, phases=[{"size": "30%"}, {"size": 2, "release": True},
                                         {"release": True}])
    assert [p["size"] for p in deployment["phases"]] == [3, 2, 5]
    order = sorted(targets, key=lambda d: hashlib.sha256(
        f"{deployment['id']}/{d.id}".encode()).hexdigest())
    expected = {d.id: 1 if i < 3 else 2 if i < 5 else 3 for i, d in enumerate(order)}
    assert phases_of(client, admin, deployment) == expected
    started = [p["started_at"] is not None for p in shown(client, admin, deployment)["phases"]]
    assert started == [True, False, False]


def lab_and_field_devices(fleet, labs: int, others: int) -> tuple[list, list]:
    """Accepted devices, the first `labs` of them reporting site=lab in their inventory."""
    lab = [fleet.accepted(f"52:54:00:00:02:{index:02x}", "ed25519") for index in range(labs)]
    field = [fleet.accepted(f"52:54:00:00:03:{index:02x}", "ed25519")
             for index in range(others)]
    for device in lab:
        response = fleet.client.patch("/api/devices/v1/inventory/device/attributes",
                                      json=[{"name": "site", "value": "lab"}],
                                      headers=device.headers)
        assert response.status_code == 200
    return lab, field


def test_a_phase_chosen_by_an_inventory_filter_is_the_canary(client, admin, fleet, upload,
                                                             deploy):
    upload("app-1.0")
    lab, field = lab_and_field_devices(fleet, 3, 9)
    site_lab = [{"attribute": "site", "type": "$eq", "value": "lab"}]
    deployment = deploy(lab + field, phases=[
        {"filter": site_lab}, {"size": "34%", "after_success": "100%"}, {"release": True}])
    # The filter's phase has exactly the lab devices; the others split the 9 field devices
    # in hash order, the percentage counted over those 9 (34% of 9 = 3, the rest 6).
    assert [(p["size"], p["filter"]) for p in deployment["phases"]] == [
        (3, site_lab), (3, None), (6, None)]
    phases = phases_of(client, admin, deployment)
    assert {d.id for d in by_phase(lab + field, phases, 1)} == {d.id for d in lab}
    order = sorted(field, key=lambda d: hashlib.sha256(
        f"{deployment['id']}/{d.id}".encode()).hexdigest())
    assert [phases[d.id] for d in order] == [2] * 3 + [3] * 6
    # Phase 2 waits for the lab: a field device gets nothing until every lab device succeeded.
    for device in lab[:-1]:
        run_to(fleet, device, deployment, "success")
    assert all(fleet.next(device).status_code == 204 for device in field)
    run_to(fleet, lab[-1], deployment, "success")
    # The device's event comes before the phase start its success made.
    last_two = client.get("/api/management/v1/events", headers=admin,
                          query_string={"limit": 1000}).json[-2:]
    assert [(e["type"], e["data"].get("device_id"), e["data"].get("phase"))
            for e in last_two] == [("deployment.device_finished", lab[-1].id, None),
                                   ("deployment.phase_started", None, 2)]
    second = by_phase(field, phases, 2)
    assert all(fleet.next(device).json["id"] == deployment["id"] for device in second)
    assert all(fleet.next(device).status_code == 204 for device in by_phase(field, phases, 3))
    started = [entry["detail"]["why"] for entry in audit(client, admin, deployment)
               if entry["action"] == "deployment.phase_start"]
    assert started == ["phase 1 starts with the deployment",
                       "phase 1 reached 100% success (3 of 3 devices)"]


def test_a_device_matching_two_phases_filters_is_in_the_first(client, admin, fleet, upload,
                                                              deploy):
    upload("app-1.0")
    lab, field = lab_and_field_devices(fleet, 2, 2)
    deployment = deploy(lab + field, phases=[
        {"filter": [{"attribute": "site", "type": "$exists", "value": True}]},
        {"filter": [{"attribute": "artifact_name", "type": "$in",
                     "value": ["release-0", "release-1"]}], "release": True}])
    assert [p["size"] for p in deployment["phases"]] == [2, 2]
    phases = phases_of(client, admin, deployment)
    assert {d.id for d in by_phase(lab + field, phases, 1)} == {d.id for d in lab}


@pytest.mark.parametrize("phases, message", [
    ([{"size": 1, "filter": [{"attribute": "site", "type": "$eq", "value": "lab"}]}, {}],
     "phases[0]: a phase has a size or a filter, not both"),
    ([{"filter": [{"attribute": "site", "type": "$near", "value": "lab"}]}, {"release": True}],
     "phases[0].filter[0]: type must be one of"),
    ([{"filter": "site=lab"}, {"release": True}], "phases[0].filter must be a list of 1 to"),
    ([{"filter": [{"attribute": "site", "type": "$eq", "value": "moon"}]}, {"release": True}],
     "phase 1: no device of the deployment matches its filter"),
    ([{"filter": [{"attribute": "site", "type": "$eq", "value": "lab"}]}],
     "2 device(s) match no phase's filter: add a last phase without a filter"),
])
def test_bad_filter_phases_are_400(client, admin, fleet, upload, phases, message):
    upload("app-1.0")
    lab, field = lab_and_field_devices(fleet, 1, 2)
    response = client.post(DEPLOYMENTS, json={
        "name": "d", "artifact_name": "app-1.0", "devices": [d.id for d in lab + field],
        "phases": phases}, headers=admin)
    assert response.status_code == 400, response.json
    assert message in response.json["error"]


def test_failure_threshold_pauses_waiting_devices_get_nothing_the_middle_finishes(
        client, admin, fleet, upload, devices, deploy):
    upload("app-1.0")
    targets = devices(6)
    deployment = deploy(targets, phases=[{"size": 3}, {"after_success": "100%"}],
                        max_failures=0)
    phases = phases_of(client, admin, deployment)
    failing, middle, late = by_phase(targets, phases, 1)
    behind = by_phase(targets, phases, 2)
    assert all(fleet.next(d).status_code == 204 for d in behind)  # phase 2 waits
    assert fleet.next(middle).status_code == 200
    fleet.status(middle, deployment["id"], "installing")
    run_to(fleet, failing, deployment, "failure")

    paused = shown(client, admin, deployment)
    assert paused["status"] == "paused"
    assert paused["pause_reason"] == ("phase 1: 1 of 1 finished devices failed, more than "
                                      "the 0 allowed")
    assert paused["phases"][0]["failures"] == 1
    assert fleet.next(late).status_code == 204  # not started: nothing while paused
    assert fleet.next(middle).status_code == 200  # in the middle: still its deployment
    assert fleet.status(middle, deployment["id"], "success").status_code == 204  # finishes
    assert all(fleet.next(d).status_code == 204 for d in behind)
    entry = audit(client, admin, deployment)[-1]
    assert (entry["action"], entry["actor"], entry["detail"]) == (
        "deployment.pause", "system", {"why": paused["pause_reason"], "phase": 1})

    assert client.post(f"{DEPLOYMENTS}/{deployment['id']}/release",
                       headers=admin).status_code == 409  # paused: resume first
    resumed = client.post(f"{DEPLOYMENTS}/{deployment['id']}/resume", headers=admin)
    assert resumed.status_code == 200 and resumed.json["status"] == "inprogress"
    assert fleet.next(late).status_code == 200
    assert all(fleet.next(d).status_code == 204 for d in behind)  # 100% success: never
    released = client.post(f"{DEPLOYMENTS}/{deployment['id']}/release", headers=admin).json
    assert released["phases"][1]["started_at"] is not None
    assert all(fleet.next(d).status_code == 200 for d in behind)
    assert [(e["action"], e["detail"]["why"]) for e in audit(client, admin, deployment)] == [
        ("deployment.create", "created"),
        ("deployment.phase_start", "phase 1 starts with the deployment"),
        ("deployment.pause", paused["pause_reason"]),
        ("deployment.resume", "resumed by an operator"),
        ("deployment.phase_start", "phase 2 released by an operator"),
    ]


def test_a_percentage_threshold_counts_the_finished_devices(client, admin, fleet, upload,
                                                            devices, deploy):
    upload("app-1.0")
    targets = devices(5)
    deployment = deploy(targets, phases=[{"size": 5, "max_failures": "50%"}])
    outcomes = ["success", "failure", "success", "failure", "failure"]
    for device, result in zip(targets, outcomes, strict=True):  # 1/2, 1/3, 2/4 failed: 50%
        assert shown(client, admin, deployment)["status"] != "paused"
        run_to(fleet, device, deployment, result)
    assert shown(client, admin, deployment)["pause_reason"] == (
        "phase 1: 3 of 5 finished devices failed, more than the 50% allowed")


def test_success_threshold_starts_the_next_phase(client, admin, fleet, upload, devices,
                                                 deploy):
    upload("app-1.0")
    targets = devices(4)
    deployment = deploy(targets, phases=[{"size": 2}, {"after_success": "50%"}])
    phases = phases_of(client, admin, deployment)
    canary, behind = by_phase(targets, phases, 1), by_phase(targets, phases, 2)
    assert fleet.next(behind[0]).status_code == 204
    run_to(fleet, canary[0], deployment, "success")
    assert fleet.next(behind[0]).status_code == 200
    entry = audit(client, admin, deployment)[-1]
    assert (entry["action"], entry["detail"]["why"]) == (
        "deployment.phase_start", "phase 1 reached 50% success (1 of 2 devices)")


def test_resume_with_a_fixed_artifact_retries_the_failed_and_completes(
        client, admin, fleet, upload, devices, deploy):
    upload("app-1.0")
    targets = devices(4)
    deployment = deploy(targets, phases=[{"size": 2}, {"after_success": "100%"}],
                        max_failures=0)
    phases = phases_of(client, admin, deployment)
    canary, behind = by_phase(targets, phases, 1), by_phase(targets, phases, 2)
    run_to(fleet, canary[0], deployment, "failure")
    assert shown(client, admin, deployment)["status"] == "paused"
    assert fleet.next(canary[1]).status_code == 204

    refused = client.post(f"{DEPLOYMENTS}/{deployment['id']}/resume",
                          json={"artifact_name": "app-1.1"}, headers=admin)
    assert refused.status_code == 400 and "no artifact named 'app-1.1'" in refused.json["error"]
    upload("app-1.1")
    resumed = client.post(f"{DEPLOYMENTS}/{deployment['id']}/resume",
                          json={"artifact_name": "app-1.1"}, headers=admin).json
    assert resumed["artifact_name"] == "app-1.1"
    assert resumed["phases"][0]["failures"] == 0  # the failed device is pending again
    for device in canary:
        assert fleet.next(device).json["artifact"]["artifact_name"] == "app-1.1"
        run_to(fleet, device, deployment, "success")
    for device in behind:
        assert fleet.next(device).json["artifact"]["artifact_name"] == "app-1.1"
        run_to(fleet, device, deployment, "success")
    done = shown(client, admin, deployment)
    assert done["status"] == "finished"
    assert done["statistics"]["success"] == 4
    assert done["attempts"] == 5  # the failed canary device tried twice
    entry = [e for e in audit(client, admin, deployment) if e["action"] == "deployment.resume"]
    assert entry[0]["detail"] == {"why": "resumed by an operator with app-1.1",
                                  "artifact_name": "app-1.1", "was": "app-1.0", "reopened": 1}


def test_retries_offer_the_artifact_again_and_count_attempts(client, admin, fleet, upload,
                                                             devices, deploy):
    upload("app-1.0")
    flaky, broken = devices(2)
    deployment = deploy([flaky, broken], retries=1, max_failures=0)
    run_to(fleet, flaky, deployment, "failure")
    # The resent report of the failed attempt is no new attempt.
    assert fleet.status(flaky, deployment["id"], "failure").status_code == 204
    view = {d["device_id"]: d for d in client.get(f"{DEPLOYMENTS}/{deployment['id']}/devices",
                                                  headers=admin).json}
    assert (view[flaky.id]["status"], view[flaky.id]["attempts"]) == ("pending", 1)
    assert shown(client, admin, deployment)["status"] == "inprogress"  # no pause: not final
    run_to(fleet, flaky, deployment, "success")
    run_to(fleet, broken, deployment, "failure")
    run_to(fleet, broken, deployment, "failure")
    assert fleet.next(broken).status_code == 204  # out of attempts
    done = shown(client, admin, deployment)
    assert done["statistics"]["success"] == 1 and done["statistics"]["failure"] == 1
    assert done["attempts"] == 4
    assert done["status"] == "finished"
    assert done["phases"][0]["failures"] == 1


def test_start_time_and_maintenance_window(app, client, admin, fleet, upload, devices,
                                           deploy):
    upload("app-1.0")
    device, = devices(1)
    base = time.time()
    app.config["CLOCK"] = lambda: base
    at = datetime.fromtimestamp(base, UTC)
    inside = [at + timedelta(hours=2), at + timedelta(hours=3)]
    window = "-".join(t.strftime("%H:%M") for t in inside)
    deployment = deploy([device], start_at=(at + timedelta(hours=1)).isoformat(),
                        window=window)
    assert deployment["status"] == "scheduled" and deployment["window"] == window
    assert fleet.next(device).status_code == 204  # before the start
    app.config["CLOCK"] = lambda: base + 1.5 * 3600
    assert fleet.next(device).status_code == 204  # started, but outside the window
    entry = audit(client, admin, deployment)[-1]
    assert entry["action"] == "deployment.phase_start"
    assert entry["detail"]["why"].startswith("phase 1: its start time ")
    app.config["CLOCK"] = lambda: base + 2.5 * 3600
    assert fleet.next(device).status_code == 200


def test_a_window_may_wrap_past_midnight():
    deployment = Deployment(window_start=22 * 60, window_end=4 * 60)
    day = datetime(2026, 12, 1, tzinfo=UTC)
    assert [in_window(deployment, day.replace(hour=h)) for h in (21, 22, 23, 0, 3, 4, 12)] == \
        [False, True, True, True, True, False, False]


def test_a_phase_starts_at_its_time(app, client, admin, fleet, upload, devices, deploy):
    upload("app-1.0")
    targets = devices(2)
    base = time.time()
    app.config["CLOCK"] = lambda: base
    later = datetime.fromtimestamp(base + 600, UTC).isoformat()
    deployment = deploy(targets, phases=[{"size": 1}, {"start_at": later}])
    behind, = by_phase(targets, phases_of(client, admin, deployment), 2)
    assert fleet.next(behind).status_code == 204
    app.config["CLOCK"] = lambda: base + 601
    assert fleet.next(behind).status_code == 200
    assert shown(client, admin, deployment)["phases"][1]["started_at"] is not None


def test_devices_added_to_an_open_deployment_join_its_last_phase(
        app, client, admin, fleet, upload, devices, deploy):
    upload("app-1.0")
    first, second, newcomer = devices(3)
    deployment = deploy([first, second], phases=[{"size": 1}, {"release": True}])
    with app.app_context():
        assert service.add_devices(deployment["id"], [newcomer.id, first.id]) == [newcomer.id]
        service.db.session.commit()
    view = shown(client, admin, deployment)
    assert [p["size"] for p in view["phases"]] == [1, 2]
    assert phases_of(client, admin, deployment)[newcomer.id] == 2
    assert fleet.next(newcomer).status_code == 204
    client.post(f"{DEPLOYMENTS}/{deployment['id']}/release", headers=admin)
    assert fleet.next(newcomer).json["id"] == deployment["id"]


def test_operator_pause_with_a_reason(client, admin, fleet, upload, devices, deploy):
    upload("app-1.0")
    device, = devices(1)
    deployment = deploy([device])
    paused = client.post(f"{DEPLOYMENTS}/{deployment['id']}/pause",
                         json={"reason": "support is away"}, headers=admin)
    assert paused.json["pause_reason"] == "support is away"
    metrics = client.get("/metrics", headers=admin).get_data(as_text=True)
    assert 'tern_deployments{state="paused"} 1.0' in metrics
    assert client.post(f"{DEPLOYMENTS}/{deployment['id']}/pause",
                       headers=admin).status_code == 409
    assert fleet.next(device).status_code == 204
    assert client.post(f"{DEPLOYMENTS}/{deployment['id']}/resume", headers=admin).status_code \
        == 200
    assert client.post(f"{DEPLOYMENTS}/{deployment['id']}/resume", headers=admin).status_code \
        == 409
    entry = audit(client, admin, deployment)[-2]
    assert (entry["action"], entry["actor"], entry["detail"]) == (
        "deployment.pause", "user:admin@example.com", {"why": "support is away"})


@pytest.mark.parametrize("options, message", [
    ({"phases": "canary"}, "phases must be a list"),
    ({"phases": [{"size": "150%"}]}, "phases[0].size must be an integer of at least 1 or a "
                                     "percentage 'N%' (1 to 100)"),
    ({"phases": [{"size": 1, "colour": "red"}]}, "phases[0] must be an object with"),
    ({"phases": [{"size": 1, "after_success": "50%"}]}, "phases[0] starts with the deployment"),
    ({"phases": [{"size": 1}, {}]}, "phases[1] must start in one way"),
    ({"phases": [{"size": 1}, {"release": True, "after_success": "9%"}]},
     "phases[1] must start in one way"),
    ({"phases": [{"size": 1}, {"after_success": 3}]}, "after_success must be a percentage"),
    ({"phases": [{"size": 5}, {"release": True}]}, "phase 2 would have no devices"),
    ({"phases": [{"size": 1}, {"size": 1, "release": True}]}, "the phases have 2 devices"),
    ({"max_failures": "many"}, "max_failures must be an integer of at least 0"),
    ({"retries": -1}, "retries must be from 0 to 100"),
    ({"retries": "2"}, "'retries' must be a integer"),
    ({"start_at": "tomorrow"}, "start_at must be an ISO 8601 time"),
    ({"window": "25:00-01:00"}, "window must be HH:MM-HH:MM"),
    ({"window": "02:00-02:00"}, "window must not start and end at the same time"),
])
def test_bad_rollout_parameters_are_400(client, admin, upload, devices, options, message):
    upload("app-1.0")
    targets = devices(3)
    response = client.post(DEPLOYMENTS, json={"name": "d", "artifact_name": "app-1.0",
                                              "devices": [d.id for d in targets], **options},
                           headers=admin)
    assert response.status_code == 400, response.json
    assert message in response.json["error"]


def test_a_read_only_user_cannot_pause_resume_or_release(client, admin, upload, devices,
                                                         deploy):
    upload("app-1.0")
    deployment = deploy(devices(1))
    password = "another horse battery"
    assert client.post("/api/management/v1/users", json={
        "email": "viewer@example.com", "password": password, "role": "read-only"},
        headers=admin).status_code == 201
    credentials = base64.b64encode(f"viewer@example.com:{password}".encode()).decode()
    token = client.post("/api/management/v1/auth/login",
                        headers={"Authorization": f"Basic {credentials}"}).json["token"]
    viewer = {"Authorization": f"Bearer {token}"}
    for action in ("pause", "resume", "release"):
        response = client.post(f"{DEPLOYMENTS}/{deployment['id']}/{action}", headers=viewer)
        assert response.status_code == 403, action
    assert shown(client, admin, deployment)["status"] == "pending"


def test_a_poll_and_a_report_cost_the_same_statements_whatever_the_deployment_size(
        app, client, admin, fleet, upload, devices, deploy):
    """Phases and thresholds add no query that grows with the fleet: a waiting device's
    poll, a canary's poll and its final report run as many statements in a deployment of
    2 devices as in one of 10; the poll of an idle device or of one whose phase waits for
    the canary runs none beyond the token lookup."""
    upload("app-1.0")
    targets = devices(13)
    idle = targets[12]
    statements, cost = statement_counter(app)
    costs = []
    for group in (targets[:2], targets[2:12]):
        deployment = deploy(group, phases=[{"size": 1, "max_failures": 0},
                                           {"after_success": "100%"}])
        phases = phases_of(client, admin, deployment)
        canary, waiting = by_phase(group, phases, 1)[0], by_phase(group, phases, 2)[0]
        costs.append((
            cost(lambda: fleet.next(waiting)),  # noqa: B023 (called at once)
            cost(lambda: fleet.next(canary)),  # noqa: B023
            cost(lambda: fleet.status(canary, deployment["id"], "success")),  # noqa: B023
        ))
        assert fleet.next(waiting).status_code == 200  # the report started phase 2
    assert costs[0] == costs[1], costs
    assert costs[0][0] == 0, costs
    assert cost(lambda: fleet.next(idle)) == 0
    cost(lambda: fleet.status(waiting, deployment["id"], "failure"))  # noqa: B023
    # ... and none of them reads a deployment's devices (a fleet's worth of rows).
    # (Whether the deployment has devices left, asked as a device finishes for its event, is
    # one probe of the partial index of open rows, ix_device_deployments_open_by_deployment.)
    def reads_many(sql: str) -> bool:
        where = sql.partition("FROM device_deployments")[2].partition("WHERE")[2]
        probe = sql.lstrip().startswith("SELECT EXISTS") and "finished_at IS NULL" in where
        return bool(where) and "device_deployments.device_id" not in where and not probe

    assert statements and not any(reads_many(sql) for sql in statements), statements


def statement_counter(app):
    """(the statements run, cost(action) -> how many `action` ran), beyond db.read_one's
    token lookup, which goes to the driver directly."""
    statements: list[str] = []
    engine = service.db.engine(app)

    def count(*args) -> None:
        statements.append(args[2])

    def cost(action) -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            action()
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    return statements, cost


def test_a_device_pending_in_a_paused_deployment_polls_with_the_token_lookup_alone(
        app, client, admin, fleet, upload, devices, deploy):
    """The devices of a large paused deployment poll at the cost of idle ones (issue 18 §6:
    `bench/polls.py`'s paused row); once resumed, the same poll finds the deployment."""
    upload("app-1.0")
    targets = devices(2)
    deployment = deploy(targets, max_failures=0)
    _, cost = statement_counter(app)
    failing, pending = targets
    assert fleet.next(pending).status_code == 200  # started: reads its deployment
    run_to(fleet, failing, deployment, "failure")
    assert shown(client, admin, deployment)["status"] == "paused"
    answers = []
    assert cost(lambda: answers.append(fleet.next(pending).status_code)) == 0
    assert answers == [204]
    assert client.post(f"{DEPLOYMENTS}/{deployment['id']}/resume",
                       headers=admin).status_code == 200
    assert cost(lambda: answers.append(fleet.next(pending).status_code)) > 0
    assert answers == [204, 200]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migration_gives_each_deployment_one_started_phase_with_its_outcomes(
        engine, tmp_path, request):
    url = (f"sqlite:///{tmp_path / 'old.db'}" if engine == "sqlite" else
           request.getfixturevalue("postgres").create_database("tern_rollout_migration"))
    command.upgrade(alembic_config(url), "0005_signatures")
    database = create_engine(url)
    now = "2026-11-29 12:00:00"
    with database.begin() as connection:
        connection.execute(text(
            "INSERT INTO deployments (id, name, artifact_name, force, created_at) VALUES "
            f"('old', 'old', 'app-1.0', false, '{now}')"))
        connection.execute(text(
            "INSERT INTO device_deployments (id, deployment_id, device_id, status, created_at)"
            f" VALUES ('1', 'old', 'd1', 'success', '{now}'), "
            f"('2', 'old', 'd2', 'failure', '{now}'), ('3', 'old', 'd3', 'pending', '{now}')"))
    command.upgrade(alembic_config(url), "head")
    with database.connect() as connection:
        phase = connection.execute(text(
            "SELECT number, size, started_at, successes, failures FROM deployment_phases "
            "WHERE deployment_id = 'old'")).one()
        devices = dict(connection.execute(text(
            "SELECT device_id, attempts FROM device_deployments WHERE phase = 0")).all())
        retries = connection.execute(text("SELECT retries FROM deployments")).scalar_one()
    database.dispose()
    assert (phase.number, phase.size, phase.successes, phase.failures) == (0, 3, 1, 1)
    assert phase.started_at is not None
    assert devices == {"d1": 1, "d2": 1, "d3": 0} and retries == 0
