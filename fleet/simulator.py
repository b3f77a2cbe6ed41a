"""Many simulated devices in one process: asyncio waits, a bounded thread pool works.

Each device is an asyncio task that boots its device and runs the daemon's cycles until
its scenario is done; the cycles (blocking: requests, files, the machine) run in the
pool, the waits between them (poll interval, jitter, backoff) in asyncio, so thousands of
devices need only as many threads as requests in flight.
"""
import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .device import (
    TRANSIENT_FAULT,
    FleetDevice,
    PowerCut,
    Reboot,
    Settings,
    WorkerSessions,
    choose_faults,
)
from .management import Management

SCENARIOS = ("register", "poll", "update")
# A device's status in a deployment when it is not in the middle of an update.
SETTLED = {"pending", "success", "failure", "already-installed", "noartifact", "aborted",
           "decommissioned"}
ADMISSIONS = ("preauthorize", "accept", "pending")


class FleetError(Exception):
    """The run could not go on (the server refused an operator's request)."""


@dataclass
class Options:
    devices: int
    scenario: str = "update"
    admission: str = "preauthorize"
    threads: int = 32
    polls: int = 3  # poll: successful polls per device
    artifact: Path | None = None  # update: uploaded first (already there: fine)
    artifact_name: str | None = None  # update: the deployment's artifact
    deployment_id: str | None = None  # update: an existing deployment instead
    deploy_to: str = "fleet"  # or "all": every accepted device, not only this fleet's
    fail_rate: float = 0.0
    transient_fail_rate: float = 0.0  # devices whose first trial fails, not a retry
    power_cut_rate: float = 0.0
    delta_rate: float = 0.0  # devices that install an artifact's block index adaptively
    retries: int = 0  # update: of the new deployment (a given one says its own)
    phases: list[dict] | None = None  # update: of the new deployment, as the API takes them
    until_paused: bool = False  # update: end once the deployment paused and settled
    seed: int | None = None
    workdir: Path | None = None
    timeout: float = 3600.0
    progress: bool = False


class Fleet:
    def __init__(self, settings: Settings, management: Management | None, options: Options):
        if options.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
        if options.admission not in ADMISSIONS:
            raise ValueError(f"admission must be one of {', '.join(ADMISSIONS)}")
        if management is None and options.admission != "pending":
            raise ValueError(f"admission {options.admission} needs a management token")
        if options.scenario != "register" and options.admission == "pending":
            raise ValueError(f"scenario {options.scenario} needs accepted devices")
        if options.scenario == "update" and not (options.artifact_name or options.deployment_id):
            raise ValueError("scenario update needs an artifact name or a deployment")
        self.settings = settings
        self.management = management
        self.options = options
        self.rng = random.Random(options.seed)
        self.pool = ThreadPoolExecutor(options.threads, thread_name_prefix="device")
        self.sessions = WorkerSessions()
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="tern-fleet-"))
        faults = choose_faults(options.devices, options.fail_rate, options.power_cut_rate,
                               self.rng, options.transient_fail_rate)
        delta = set(self.rng.sample(range(options.devices),
                                    round(options.devices * options.delta_rate)))
        self.devices = [FleetDevice(self.workdir / f"sim-{index:05d}", index, settings,
                                    self.sessions, faults[index], index in delta)
                        for index in range(options.devices)]
        self.device_ids: dict[str, str] = {}  # device name -> server id
        self.deployment_id = options.deployment_id
        self.deployed_at: float | None = None
        self.retries = options.retries  # of the deployment: a failure may not be the end
        self.deployment: dict | None = None  # the server's view, at the end
        self.failure: str | None = None  # of the operator's side: ends the run

    async def work(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    async def run(self) -> dict:
        """Run the scenario; returns the report (see `report`)."""
        started = time.monotonic()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        try:
            await asyncio.gather(*(self.work(device.manufacture) for device in self.devices))
            if self.options.admission == "preauthorize":
                await asyncio.gather(*(self.work(self._preauthorize, device)
                                       for device in self.devices))
                if len(self.device_ids) < len(self.devices):  # known from an earlier run
                    await self.work(self._look_up_ids)
            tasks = [asyncio.create_task(self.live(device)) for device in self.devices]
            operator = [self._admit()] if self.options.admission == "accept" else []
            if self.options.scenario == "update" and not self.deployment_id:
                operator.append(self._deploy())
            elif self.options.scenario == "update":
                self.retries = (await self.work(self.management.deployment,
                                                self.deployment_id))["retries"]
            if self.options.until_paused:
                operator.append(self._stop_when_paused(tasks))
            helpers = [asyncio.create_task(self._or_stop(job, tasks)) for job in operator]
            if self.options.progress:
                helpers.append(asyncio.create_task(self._show_progress(started)))
            _, unfinished = await asyncio.wait(tasks, timeout=self.options.timeout)
            for task in [*unfinished, *helpers]:
                task.cancel()
            await asyncio.gather(*unfinished, *helpers, return_exceptions=True)
            if self.failure:
                raise FleetError(self.failure)
            finished = time.monotonic()
            rows = await self.work(self._server_rows)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.options.progress:
            print(file=sys.stderr)
        return self.report(started, finished, cpu, rows)

    # -- one device ---------------------------------------------------------------------------

    async def live(self, device: FleetDevice) -> None:
        """Boot, then run the daemon's cycles until the scenario is done; a reboot or a
        power cut (in a cycle, or in the boot's resume) means: boot again."""
        record = device.record
        await asyncio.sleep(self.rng.uniform(0, self.settings.poll_interval))  # not all at once
        powered = False
        try:
            while True:
                try:
                    if not powered:
                        await self.work(device.boot)
                        powered = True
                    if self.done(device):
                        break
                    delay = await self.work(device.cycle)
                except (Reboot, PowerCut):
                    record.phase, powered = "off", False
                    continue
                record.phase = "polling"
                if self.done(device):
                    break
                await asyncio.sleep(delay)
            record.phase = "done"
        except Exception:
            record.phase = "crashed"
            record.error = traceback.format_exc()

    def done(self, device: FleetDevice) -> bool:
        record = device.record
        if self.options.scenario == "register":
            wanted = "pending" if self.options.admission == "pending" else "accepted"
            return record.admission == wanted
        if self.options.scenario == "poll":
            return record.polls >= self.options.polls
        return (record.result is not None and record.deployment_id == self.deployment_id
                and (record.result != "failure" or record.attempts > self.retries)
                and device.stored_state() == "Idle")  # not cut off before storing Idle

    # -- the operator ---------------------------------------------------------------------------

    async def _or_stop(self, job, tasks: list[asyncio.Task]) -> None:
        """Run an operator's job; if it fails, the run cannot succeed: stop the devices."""
        try:
            await job
        except Exception as error:
            self.failure = f"{type(error).__name__}: {error}"
            for task in tasks:
                task.cancel()

    def _preauthorize(self, device: FleetDevice) -> None:
        device_id = self.management.preauthorize(device.identity, device.public_key())
        if device_id:
            self.device_ids[device.name] = device_id

    def _look_up_ids(self) -> None:
        ours = {device.identity["mac"]: device.name for device in self.devices}
        for known in self.management.devices():
            name = ours.get(known["identity_data"].get("mac"))
            if name:
                self.device_ids[name] = known["id"]

    async def _admit(self) -> None:
        """Accept this fleet's devices as their auth requests arrive."""
        ours = {device.identity["mac"]: device.name for device in self.devices}
        while len(self.device_ids) < len(self.devices):
            for pending in await self.work(self.management.devices, "pending"):
                name = ours.get(pending["identity_data"].get("mac"))
                if name and name not in self.device_ids:
                    self.device_ids[name] = pending["id"]  # known before it can be accepted
                    await self.work(self.management.accept, pending["id"])
            await asyncio.sleep(1)

    async def _deploy(self) -> None:
        """Once every device is accepted: upload the artifact, create the deployment."""
        while not all(device.record.admission == "accepted" for device in self.devices):
            await asyncio.sleep(0.2)
        if self.options.artifact:
            await self.work(self.management.upload, self.options.artifact)
        devices = [self.device_ids[device.name] for device in self.devices] \
            if self.options.deploy_to == "fleet" else None
        self.deployment_id = await self.work(self.management.create_deployment,
                                             f"tern-fleet {time.strftime('%H:%M:%S')}",
                                             self.options.artifact_name, devices,
                                             self.options.retries, self.options.phases)
        self.deployed_at = time.monotonic()

    async def _stop_when_paused(self, tasks: list[asyncio.Task]) -> None:
        """Once the deployment is paused and settled (no device in the middle of an update,
        on the server or here, twice a second apart), stop the devices: those the pause
        left without the update are `waiting`."""
        settled = 0
        while settled < 2:
            await asyncio.sleep(1)
            settled = settled + 1 if await self.work(self._paused_and_settled) else 0
        for device, task in zip(self.devices, tasks, strict=True):
            if not task.done():
                device.record.phase = "waiting" if device.record.result is None else "done"
                task.cancel()

    def _paused_and_settled(self) -> bool:
        if not self.deployment_id or \
                self.management.deployment(self.deployment_id)["status"] != "paused":
            return False
        statuses = set(self.management.deployment_statuses(self.deployment_id).values())
        return statuses <= SETTLED and all(device.stored_state() == "Idle"
                                           for device in self.devices)

    def _server_rows(self) -> dict[str, dict]:
        """device id -> its row in the deployment (status, download stats)."""
        if self.options.scenario != "update" or not self.deployment_id:
            return {}
        self.deployment = self.management.deployment(self.deployment_id)
        return {row["device_id"]: row
                for row in self.management.deployment_devices(self.deployment_id)}

    async def _show_progress(self, started: float) -> None:
        while True:
            phases = Counter(device.record.phase for device in self.devices)
            results = Counter(device.record.result for device in self.devices
                              if device.record.result)
            line = (f"{time.monotonic() - started:7.1f} s  "
                    + " ".join(f"{phase} {count}" for phase, count in sorted(phases.items()))
                    + ("  | " + " ".join(f"{r} {n}" for r, n in sorted(results.items()))
                       if results else ""))
            print(f"\r{line[:160]:<160}", end="", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)

    # -- the report -----------------------------------------------------------------------------

    def report(self, started: float, finished: float, cpu_before, rows: dict) -> dict:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        artifact_name = self.options.artifact_name
        devices = []
        for device in self.devices:
            record = device.record
            server_id = self.device_ids.get(device.name)
            row = rows.get(server_id, {})
            entry = {
                "name": device.name, "mac": device.identity["mac"], "id": server_id,
                "phase": record.phase, "admission": record.admission, "polls": record.polls,
                "fault": device_fault(device), "power_cuts": record.power_cuts,
                "attempts": record.attempts,
                "reboots": record.reboots, "result": record.result,
                "server_status": row.get("status"), "delta": device.delta,
                "download": row.get("download"),  # the server's: mode, fetched, full
                "update_seconds": round(record.update_finished - record.update_started, 3)
                if record.update_finished and record.update_started else None,
            }
            if self.options.scenario == "update" and record.result and artifact_name:
                entry["inconsistency"] = device.inconsistency(artifact_name)
            if record.error:
                entry["error"] = record.error
            devices.append(entry)
        times = sorted(d["update_seconds"] for d in devices if d["update_seconds"] is not None)
        finishes = [d.record.update_finished for d in self.devices if d.record.update_finished]
        return {
            "scenario": self.options.scenario,
            "devices": len(devices),
            "deployment_id": self.deployment_id,
            "wall_seconds": round(finished - started, 3),
            "converge_seconds": round(max(finishes) - self.deployed_at, 3)
            if finishes and self.deployed_at else None,
            "update_seconds": {"p50": percentile(times, 50), "p99": percentile(times, 99),
                               "max": times[-1] if times else None},
            "simulator_cpu_seconds": round(cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime
                                           - cpu_before.ru_stime, 2),
            "phases": dict(Counter(d["phase"] for d in devices)),
            "results": dict(Counter(d["result"] for d in devices if d["result"])),
            "server_statuses": dict(Counter(d["server_status"] for d in devices
                                            if d["server_status"])),
            "downloads": downloads(devices),
            "deployment": None if self.deployment is None else {
                key: self.deployment[key] for key in ("status", "pause_reason", "attempts")},
            "problems": problems(self.options.scenario, devices, self.retries),
            "device": devices,
        }


def downloads(devices: list[dict]) -> dict[str, dict[str, int]]:
    """Per download mode the server saw (adaptive, full): devices and bytes fetched."""
    modes: dict[str, dict[str, int]] = {}
    for device in devices:
        if device["download"]:
            mode = modes.setdefault(device["download"]["mode"], {"devices": 0, "bytes": 0})
            mode["devices"] += 1
            mode["bytes"] += device["download"]["fetched"]
    return modes


def device_fault(device: FleetDevice) -> str | None:
    """The faults that struck: trial-boot, trial-health, power-cut-before-Sync, ..."""
    faults = device.faults
    struck = [f"trial-{faults.trial}" if faults.trial else "",
              f"power-cut-{faults.power_cut[0]}-{faults.power_cut[1]}"
              if device.record.power_cuts else ""]
    return ",".join(fault for fault in struck if fault) or None


# A cut during the trial boot counts as a failed boot (the boot script cannot tell): it
# falls back to the old slot. A cut anywhere else leaves a good update to end in success.
TRIAL_BOOT_CUTS = ("power-cut-before-ArtifactVerifyReboot", "power-cut-after-ArtifactVerifyReboot",
                   "power-cut-before-ArtifactCommit")


def expected_results(fault: str | None, retries: int = 0) -> set[str]:
    """A bad trial slot fails, unless it fails only once and the deployment allows a retry;
    a good update cut during its trial boot may end either way (consistently); cut anywhere
    else (the download and the install included: they resume), it succeeds."""
    faults = fault.split(",") if fault else []
    trial = [f for f in faults if f.startswith("trial-")]
    if trial and not (trial == [f"trial-{TRANSIENT_FAULT}"] and retries):
        return {"failure"}
    if any(f in TRIAL_BOOT_CUTS for f in faults):
        return {"success", "failure"}
    return {"success"}


def percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 3)


def problems(scenario: str, devices: list[dict], retries: int = 0) -> dict[str, int]:
    """What makes a run fail: devices that did not finish (but those a paused deployment
    keeps waiting), crashed, or (update) ended in a result their faults do not explain,
    disagree with the server, or are inconsistent."""
    counts = {
        "unfinished": sum(d["phase"] not in ("done", "crashed", "waiting") for d in devices),
        "crashed": sum(d["phase"] == "crashed" for d in devices),
    }
    if scenario == "update":
        counts["unexpected_result"] = sum(d["result"] is not None and d["result"]
                                          not in expected_results(d["fault"], retries)
                                          for d in devices)
        counts["server_mismatch"] = sum(d["result"] is not None and d["id"] is not None
                                        and d["server_status"] != d["result"]
                                        for d in devices)
        counts["inconsistent"] = sum(bool(d.get("inconsistency")) for d in devices)
    return counts


def summary_table(report: dict) -> str:
    """The report for people: a few aligned lines."""
    rows = [("scenario", f"{report['scenario']}, {report['devices']} devices"),
            ("wall time", f"{report['wall_seconds']:.1f} s"),
            ("simulator CPU", f"{report['simulator_cpu_seconds']:.1f} s")]
    if report["converge_seconds"] is not None:
        rows.append(("deployment → last result", f"{report['converge_seconds']:.1f} s"))
    times = report["update_seconds"]
    if times["p50"] is not None:
        rows.append(("update time per device",
                     f"p50 {times['p50']:.2f} s, p99 {times['p99']:.2f} s, "
                     f"max {times['max']:.2f} s"))
    for title, key in (("final phase", "phases"), ("device results", "results"),
                       ("server statuses", "server_statuses"), ("problems", "problems")):
        if report[key]:
            rows.append((title, ", ".join(f"{k} {v}" for k, v in sorted(report[key].items()))))
    if report["downloads"]:
        rows.append(("downloads", ", ".join(
            f"{mode} {counts['devices']} devices {counts['bytes'] / (1 << 20):.1f} MiB"
            for mode, counts in sorted(report["downloads"].items()))))
    width = max(len(title) for title, _ in rows)
    return "\n".join(f"{title:<{width}}  {value}" for title, value in rows)


def failed(report: dict) -> bool:
    return any(report["problems"].values())
