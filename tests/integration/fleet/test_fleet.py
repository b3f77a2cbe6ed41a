"""tern-fleet against a live tern-server (gunicorn, HTTPS): simulated devices, each running
the real updater, register and update; injected failures and power cuts end as the server
says, and every device ends consistent with it."""
import random
from pathlib import Path

import pytest

from fleet.artifacts import write_rootfs_artifact
from fleet.device import Settings
from fleet.management import Management
from fleet.simulator import TRIAL_BOOT_CUTS, Fleet, Options, failed
from testkit.admin import ServerAdmin
from testkit.artifacts import write_indexed_artifact_file
from testkit.live_server import LiveServer

from .conftest import server_statuses, tern_fleet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("fleet-server") / "data", workers=2) as live:
        yield ServerAdmin(live)


@pytest.fixture(scope="module")
def release_2(keys, tmp_path_factory):
    path = tmp_path_factory.mktemp("artifacts") / "release-2-sim.mender"
    return write_rootfs_artifact(path, "release-2", "tern-simulated",
                                 keys["ed25519"].private_key, size=100_000)


def test_50_devices_register_and_update_to_success(server, keys, release_2):
    report = tern_fleet(server, keys, "--devices", "50", "--admission", "accept",
                        "--artifact", str(release_2), "--fleet-id", "1", "--seed", "1")
    assert report["problems"] == {"unfinished": 0, "crashed": 0, "unexpected_result": 0,
                                  "server_mismatch": 0, "inconsistent": 0}
    assert report["results"] == {"success": 50}
    statuses = server_statuses(server, report["deployment_id"])
    assert sorted(statuses) == sorted(d["id"] for d in report["device"])
    assert set(statuses.values()) == {"success"}
    some = report["device"][7]
    attributes = server.attributes(some["id"])
    assert (attributes["artifact_name"], attributes["device_type"]) == \
        ("release-2", "tern-simulated")
    print(f"50 devices: {report['wall_seconds']} s, deployment → last result "
          f"{report['converge_seconds']} s, p50 {report['update_seconds']['p50']} s")


def test_the_failures_on_the_server_are_exactly_the_injected_ones(server, keys, release_2):
    report = tern_fleet(server, keys, "--devices", "50", "--artifact", str(release_2),
                        "--fail-rate", "0.2", "--fleet-id", "2", "--seed", "2")
    assert not any(report["problems"].values()), report["problems"]
    faulty = {d["id"] for d in report["device"] if d["fault"]}
    assert len(faulty) == 10
    assert {d["fault"] for d in report["device"] if d["fault"]} == \
        {"trial-boot", "trial-health"}
    statuses = server_statuses(server, report["deployment_id"])
    assert {device for device, status in statuses.items() if status == "failure"} == faulty
    assert {device for device, status in statuses.items() if status == "success"} == \
        {d["id"] for d in report["device"]} - faulty
    failed_one = next(d for d in report["device"] if d["fault"] == "trial-health")
    log = server.get(f"/deployments/{report['deployment_id']}/devices/{failed_one['id']}/log")
    assert any("50-injected: FAIL" in line["message"] for line in log["messages"])


@pytest.mark.asyncio
async def test_after_power_cuts_every_device_is_consistent_with_the_server(
        server, keys, release_2, tmp_path):
    """20 % of the devices lose power once, at a random point of the update (the download
    included): each ends consistent with the server, and each whose cut was not in its trial
    boot (which the boot script counts as a failed boot) ends in success."""
    settings = Settings(server.live.url, str(server.live.certificate),
                        (str(keys["ed25519"].public_path),), poll_interval=0.5,
                        retry_interval=0.5, fleet_id=3)
    management = Management(server.live.url, server.token, str(server.live.certificate))
    fleet = Fleet(settings, management, Options(
        50, "update", artifact=release_2, artifact_name="release-2", power_cut_rate=0.2,
        seed=3, workdir=tmp_path, timeout=240))
    report = await fleet.run()
    assert not failed(report), report["problems"]
    cut = [d for d in report["device"] if d["power_cuts"]]
    assert len(cut) == 10  # every cut struck
    statuses = server_statuses(server, report["deployment_id"])
    for device, entry in zip(fleet.devices, report["device"], strict=True):
        assert device.inconsistency("release-2") is None
        slot = "b" if statuses[entry["id"]] == "success" else "a"
        assert f"slot{2 if slot == 'a' else 3}" in Path(device.config.cmdline_file).read_text()
    outside_trial = [d for d in cut if d["fault"] not in TRIAL_BOOT_CUTS]
    assert outside_trial and {statuses[d["id"]] for d in outside_trial} == {"success"}
    assert any("Download" in d["fault"] for d in outside_trial)
    print("after power cuts:", report["server_statuses"], sorted(d["fault"] for d in cut))


def test_register_poll_and_a_given_deployment(server, keys, release_2, tmp_path):
    pending = tern_fleet(server, keys, "--devices", "5", "--scenario", "register",
                         "--admission", "pending", "--fleet-id", "4")
    assert pending["phases"] == {"done": 5}
    macs = {d["mac"] for d in pending["device"]}
    listed = [d for d in server.cli("devices", "list", "--status", "pending")
              if d["identity_data"].get("mac") in macs]
    assert len(listed) == 5

    workdir = tmp_path / "fleet-5"
    polled = tern_fleet(server, keys, "--devices", "5", "--scenario", "poll", "--polls", "2",
                        "--fleet-id", "5", "--workdir", str(workdir))
    assert not any(polled["problems"].values())
    assert all(d["polls"] >= 2 and d["admission"] == "accepted" for d in polled["device"])

    # The same devices (their directories) later take a deployment the operator made.
    Management(server.live.url, server.token, str(server.live.certificate)).upload(release_2)
    deployment = server.cli("deployments", "create", "--name", "given", "--artifact-name",
                            "release-2", *[arg for d in polled["device"]
                                           for arg in ("--device", d["id"])])["id"]
    updated = tern_fleet(server, keys, "--devices", "5", "--deployment", deployment,
                         "--artifact-name", "release-2", "--fleet-id", "5",
                         "--workdir", str(workdir))
    assert not any(updated["problems"].values()), updated["problems"]
    assert [d["id"] for d in updated["device"]] == [d["id"] for d in polled["device"]]
    assert updated["server_statuses"] == {"success": 5}
    assert all(d["inconsistency"] is None for d in updated["device"])


def test_delta_and_full_devices_share_one_deployment(server, keys, tmp_path):
    """Half the fleet installs adaptively (from slot files that hold the factory image), the
    other half takes the full payload: all succeed, and the server's per-device download
    stats say who fetched what."""
    rng = random.Random(19)
    factory = rng.randbytes(2 << 20)  # incompressible: the full download is 2 MiB
    new = bytearray(factory)
    for start in (100_000, 1_500_000):
        new[start:start + 10_000] = rng.randbytes(10_000)
    (tmp_path / "factory.img").write_bytes(factory)
    artifact = write_indexed_artifact_file(
        tmp_path / "release-delta.mender", bytes(new), name="release-delta",
        device_types=("tern-simulated",), signing_key=keys["ed25519"].private_key)
    workdir = tmp_path / "fleet"
    report = tern_fleet(server, keys, "--devices", "24", "--delta-rate", "0.5",
                        "--factory-image", str(tmp_path / "factory.img"),
                        "--artifact", str(artifact), "--fleet-id", "6", "--seed", "6",
                        "--workdir", str(workdir))
    assert not any(report["problems"].values()), report["problems"]
    assert report["server_statuses"] == {"success": 24}
    delta = [d for d in report["device"] if d["delta"]]
    full = [d for d in report["device"] if not d["delta"]]
    assert len(delta) == len(full) == 12
    size = artifact.stat().st_size
    for device in delta:
        assert server.attributes(device["id"])["delta_update"] == "block-index-2"
        log = server.get(f"/deployments/{report['deployment_id']}/devices/{device['id']}/log")
        assert device["download"]["mode"] == "adaptive", [m["message"] for m in log["messages"]]
        # the head probe, the index and two 64 KiB chunks
        assert device["download"]["fetched"] < 0.15 * size
        assert (workdir / device["name"] / "slot3.img").read_bytes() == new
    for device in full:
        assert "delta_update" not in server.attributes(device["id"])
        assert device["download"] == {"mode": "full", "fetched": size, "full": size}
    assert report["downloads"]["full"] == {"devices": 12, "bytes": 12 * size}
    assert report["downloads"]["adaptive"]["bytes"] < 12 * 0.15 * size
    print("delta and full devices:", report["downloads"], f"{report['wall_seconds']} s")
