"""Rollouts proven with a fleet (issue 18 §5): `tern-fleet` against a live `tern-server
serve` (gunicorn, HTTPS), on SQLite and on PostgreSQL. A phased deployment of a broken
release: the canary's failures cross the threshold and the rollout pauses having touched
canary devices only, each of them finished; resumed with the fixed release, it completes.
Retries turn transient failures into success."""
import pytest

from fleet.artifacts import write_rootfs_artifact
from fleet.management import Management
from testkit.admin import ServerAdmin
from testkit.artifacts import build_artifact
from testkit.live_server import LiveServer

from .conftest import server_statuses, tern_fleet

pytestmark = pytest.mark.slow
DEVICES = 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    database_url = None if request.param == "sqlite" else \
        request.getfixturevalue("postgres").create_database("tern_rollouts")
    with LiveServer(tmp_path_factory.mktemp("rollout-server") / "data", workers=2,
                    database_url=database_url) as live:
        yield ServerAdmin(live)


@pytest.fixture(scope="module")
def releases(server, keys, tmp_path_factory) -> None:
    """release-2 fails on every device (its ArtifactInstall_Enter script exits 1); release-3
    is its fix. Both on the server."""
    directory = tmp_path_factory.mktemp("releases")
    broken = directory / "release-2-broken.mender"
    broken.write_bytes(build_artifact(
        {"rootfs.ext4": b"release-2\n" * 1000}, name="release-2",
        device_types=("tern-simulated",), signing_key=keys["ed25519"].private_key,
        scripts={"ArtifactInstall_Enter_00": b"#!/bin/sh\necho release-2 is broken\nexit 1\n"}))
    fixed = write_rootfs_artifact(directory / "release-3.mender", "release-3",
                                  "tern-simulated", keys["ed25519"].private_key)
    management = Management(server.live.url, server.token, str(server.live.certificate))
    for artifact in (broken, fixed):
        management.upload(artifact)
    return fixed


def test_the_canary_pauses_the_rollout_and_the_fixed_release_completes_it(
        server, keys, releases, tmp_path):
    workdir, fleet_id = str(tmp_path / "fleet"), "21"
    same_devices = ("--devices", str(DEVICES), "--fleet-id", fleet_id, "--workdir", workdir)
    registered = tern_fleet(server, keys, "--scenario", "register", *same_devices)
    ids = {d["id"] for d in registered["device"]}
    assert len(ids) == DEVICES
    deployment = server.cli(
        "deployments", "create", "--name", "canary first", "--artifact-name", "release-2",
        *[arg for device in sorted(ids) for arg in ("--device", device)],
        "--phase", "4", "--phase", "rest,after=100%", "--max-failures", "1")["id"]
    phase_of = {d["device_id"]: d["phase"]
                for d in server.get(f"/deployments/{deployment}/devices")}
    canary = {device for device, phase in phase_of.items() if phase == 1}
    assert len(canary) == 4

    paused = tern_fleet(server, keys, "--deployment", deployment, "--artifact-name",
                        "release-2", "--until-paused", *same_devices)
    touched = {d["id"] for d in paused["device"] if d["result"]}
    assert paused["deployment"]["status"] == "paused"
    assert paused["deployment"]["pause_reason"].startswith("phase 1: ")
    assert paused["deployment"]["pause_reason"].endswith("more than the 1 allowed")
    assert 2 <= len(touched) <= 4 and touched <= canary  # nothing behind the canary
    statuses = server_statuses(server, deployment)
    assert {device for device, status in statuses.items() if status != "pending"} == touched
    assert {statuses[device] for device in touched} == {"failure"}  # the middle finished
    assert {d["id"] for d in paused["device"] if d["phase"] == "waiting"} == ids - touched
    assert paused["problems"]["unfinished"] == paused["problems"]["crashed"] == 0
    shown = server.get(f"/deployments/{deployment}")
    assert shown["phases"][1]["started_at"] is None
    assert shown["attempts"] == len(touched)

    resumed = server.cli("deployments", "resume", deployment, "--artifact-name", "release-3")
    assert (resumed["status"], resumed["artifact_name"]) == ("inprogress", "release-3")
    completed = tern_fleet(server, keys, "--deployment", deployment, "--artifact-name",
                           "release-3", *same_devices)
    assert not any(completed["problems"].values()), completed["problems"]
    assert completed["server_statuses"] == {"success": DEVICES}
    done = server.get(f"/deployments/{deployment}")
    assert done["status"] == "finished"
    assert done["attempts"] == DEVICES + len(touched)  # the canary's failed ones: twice
    entries = [e for e in reversed(server.get("/audit?limit=1000"))
               if e["target"] == deployment]
    assert [(e["action"], e["actor"].split(":")[0]) for e in entries] == [
        ("deployment.create", "local"), ("deployment.phase_start", "system"),
        ("deployment.pause", "system"), ("deployment.resume", "local"),
        ("deployment.phase_start", "system")]
    assert entries[-1]["detail"]["why"] == "phase 1 reached 100% success (4 of 4 devices)"
    print(f"paused after {len(touched)} canary devices; completed in "
          f"{completed['wall_seconds']} s")


def test_retries_turn_transient_failures_into_success(server, keys, releases):
    report = tern_fleet(server, keys, "--devices", "10", "--artifact", str(releases),
                        "--transient-fail-rate", "0.3", "--retries", "1", "--fleet-id", "22",
                        "--seed", "22")
    assert not any(report["problems"].values()), report["problems"]
    flaky = {d["id"] for d in report["device"] if d["fault"] == "trial-health-once"}
    assert len(flaky) == 3
    assert report["server_statuses"] == {"success": 10}
    attempts = {d["device_id"]: d["attempts"]
                for d in server.get(f"/deployments/{report['deployment_id']}/devices")}
    assert attempts == {d["id"]: 2 if d["id"] in flaky else 1 for d in report["device"]}
    assert {d["id"]: d["attempts"] for d in report["device"]} == attempts
    assert server.get(f"/deployments/{report['deployment_id']}")["attempts"] == 13
