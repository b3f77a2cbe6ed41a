"""The fleet's orchestration against fakes: scripted devices and a fake operator API."""
import asyncio
import random

import pytest

from fleet.device import Faults, PowerCut, Reboot, Record, Settings, choose_faults
from fleet.simulator import (
    Fleet,
    FleetError,
    Options,
    downloads,
    expected_results,
    failed,
    percentile,
    summary_table,
)


class FakeDevice:
    """Follows a script: each boot and each cycle takes the next action."""

    def __init__(self, index: int, script: list[str], fault: str | None = None):
        self.name = f"sim-{index:05d}"
        self.identity = {"mac": f"02:00:00:00:00:{index:02x}"}
        self.faults = Faults(trial=fault)
        self.delta = False
        self.record = Record()
        self.script = list(script)
        self.boots = 0
        self.state = "Idle"

    def manufacture(self) -> None:
        pass

    def public_key(self) -> str:
        return f"key of {self.name}"

    def boot(self) -> None:
        self.boots += 1
        self.record.admission = "accepted"
        self._act()

    def cycle(self) -> float:
        self.record.polls += 1
        self._act()
        return 0.001

    def _act(self) -> None:
        action = self.script.pop(0) if self.script else "nothing"
        if action == "reboot":
            raise Reboot()
        if action == "cut":
            raise PowerCut("before Sync")
        if action == "cut-before-idle":  # the result is in, Idle not stored yet
            self.record.result, self.record.deployment_id = "failure", "d1"
            self.record.attempts += 1
            self.state = "UpdateStatusReport"
            raise PowerCut("after UpdateStatusReport")
        if action in ("success", "failure"):
            self.record.result, self.record.deployment_id = action, "d1"
            self.record.attempts += 1
            self.state = "Idle"
            self.record.update_started, self.record.update_finished = 10.0, 12.5
        if action == "crash":
            raise OSError("disk full")

    def stored_state(self) -> str:
        return self.state

    def inconsistency(self, artifact_name: str) -> str | None:
        return None


class FakeManagement:
    def __init__(self, fleet_devices):
        self.devices = fleet_devices
        self.deployments = []

    def preauthorize(self, identity: dict, pubkey: str) -> str:
        return "id-" + identity["mac"]

    def upload(self, artifact) -> None:
        pass

    def create_deployment(self, name, artifact_name, devices, retries=0, phases=None):
        assert all(d.record.admission == "accepted" for d in self.devices)
        self.deployments.append((artifact_name, devices))
        return "d1"

    def deployment(self, deployment_id: str) -> dict:
        return {"status": "inprogress", "pause_reason": None, "attempts": 0, "retries": 0}

    def deployment_devices(self, deployment_id: str) -> list[dict]:
        return [{"device_id": "id-" + d.identity["mac"], "status": d.record.result,
                 "download": None} for d in self.devices]


def make_fleet(scripts, faults=None, **options) -> tuple[Fleet, FakeManagement]:
    settings = Settings("https://fake", poll_interval=0.01)
    fleet = Fleet(settings, FakeManagement([]), Options(
        0, "update", artifact_name="release-2", seed=1, **options))
    fleet.devices = [FakeDevice(i, script, (faults or {}).get(i))
                     for i, script in enumerate(scripts)]
    fleet.management.devices = fleet.devices
    return fleet, fleet.management


@pytest.mark.asyncio
async def test_devices_reboot_and_survive_power_cuts_until_their_result():
    fleet, management = make_fleet([
        ["nothing", "success"],
        ["nothing", "reboot", "nothing", "success"],
        ["cut", "nothing", "success"],  # a cut in the first boot
        ["nothing", "cut-before-idle", "nothing", "failure"],
    ], faults={3: "health"})
    report = await fleet.run()
    assert management.deployments == [
        ("release-2", [f"id-02:00:00:00:00:0{i}" for i in range(4)])]
    assert [d.boots for d in fleet.devices] == [1, 2, 2, 2]
    assert report["results"] == {"success": 3, "failure": 1}
    assert report["server_statuses"] == {"success": 3, "failure": 1}
    assert report["phases"] == {"done": 4}
    assert report["update_seconds"]["p50"] == 2.5
    assert not failed(report), report["problems"]
    assert "device results            failure 1, success 3" in summary_table(report)


@pytest.mark.asyncio
async def test_a_crashed_device_or_an_unexplained_failure_fails_the_run():
    fleet, _ = make_fleet([["nothing", "crash"], ["failure"], ["success"]])
    report = await fleet.run()
    assert report["problems"]["crashed"] == 1
    assert report["problems"]["unexpected_result"] == 1
    assert "disk full" in report["device"][0]["error"]
    assert failed(report)


@pytest.mark.asyncio
async def test_devices_that_never_finish_are_reported_at_the_timeout():
    fleet, _ = make_fleet([["nothing"] * 10_000], timeout=0.3)
    report = await asyncio.wait_for(fleet.run(), 10)
    assert report["problems"]["unfinished"] == 1
    assert failed(report)


@pytest.mark.asyncio
async def test_a_refused_deployment_ends_the_run_at_once():
    fleet, management = make_fleet([["nothing"] * 10_000])

    def refuse(*args):
        raise ValueError("409 artifact is being deleted")

    management.create_deployment = refuse
    with pytest.raises(FleetError, match="409 artifact is being deleted"):
        await asyncio.wait_for(fleet.run(), 10)


def test_options_that_cannot_work_are_refused():
    settings = Settings("https://fake")
    with pytest.raises(ValueError, match="needs a management token"):
        Fleet(settings, None, Options(1, "register"))
    with pytest.raises(ValueError, match="needs accepted devices"):
        Fleet(settings, None, Options(1, "poll", admission="pending"))
    with pytest.raises(ValueError, match="artifact name or a deployment"):
        Fleet(settings, object(), Options(1, "update"))


def test_percentiles():
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.5
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.01


def test_transient_faults_are_apart_from_lasting_ones_and_succeed_only_with_a_retry():
    faults = choose_faults(20, 0.25, 0.0, random.Random(4), transient_fail_rate=0.5)
    kinds = [f.trial for f in faults]
    assert (kinds.count("health-once"), len(kinds) - kinds.count(None)) == (10, 15)
    assert expected_results("trial-health-once", retries=1) == {"success"}
    assert expected_results("trial-health-once", retries=0) == {"failure"}
    assert expected_results("trial-health", retries=3) == {"failure"}


def test_a_good_update_cut_outside_its_trial_boot_must_succeed():
    assert expected_results(None) == {"success"}
    for cut in ("before-Sync", "after-Download", "during-Download", "before-ArtifactInstall",
                "after-ArtifactInstall", "after-ArtifactCommit", "before-UpdateStatusReport"):
        assert expected_results(f"power-cut-{cut}") == {"success"}, cut
    assert expected_results("power-cut-before-ArtifactVerifyReboot") == {"success", "failure"}
    assert expected_results("trial-health,power-cut-during-Download") == {"failure"}


def test_downloads_add_up_what_the_server_saw_per_mode():
    full = {"mode": "full", "fetched": 1000, "full": 1000}
    devices = [{"download": {"mode": "adaptive", "fetched": 120, "full": 1000}},
               {"download": full}, {"download": None}, {"download": full}]
    assert downloads(devices) == {"adaptive": {"devices": 1, "bytes": 120},
                                  "full": {"devices": 2, "bytes": 2000}}
