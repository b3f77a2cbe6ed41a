#!/usr/bin/env python3
"""Scale-out for real: two `tern-server serve` instances on one PostgreSQL and one S3 bucket
(moto's server) behind nginx (the README's block), a phased deployment to N simulated devices
(`tern-fleet`) through nginx, and one instance SIGKILLed (gunicorn master and workers: a host
lost) midway and started again.

    python -m bench.scale_out [--devices 10000] [--poll-interval 60] [--kill-at 0.4]
                              [--fail-rate 0.01] [--seed 1] [--json FILE]

Then it checks that nothing was lost and no device was counted twice: every device reported
one final result and the server has the same (`tern-fleet`'s own checks); the deployment's
statistics, its phases' counters (increments, one per final report) and its attempts equal
what the devices saw; each device has exactly one `device_finished` event, with its status;
each phase started once (audit log and events); the deployment finished once. Exit 1 if any
check fails. The devices' directories are on /dev/shm.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.fleet import signed_release
from testkit.admin import ServerAdmin
from testkit.scale_out import ScaleOut

PHASES = [{"size": "5%"}, {"size": "30%", "after_success": "50%"},
          {"after_success": "50%"}]
KILLED = 0  # the instance killed midway


class Killer(threading.Thread):
    """Once `kill_at` of the deployment's devices have finished: SIGKILL instance KILLED,
    wait `down` seconds, start it again. Records what it saw."""

    def __init__(self, cluster: ScaleOut, admin: ServerAdmin, devices: int, kill_at: float,
                 down: float):
        super().__init__(daemon=True)
        self.cluster, self.admin = cluster, admin
        self.threshold = max(1, int(devices * kill_at))
        self.down = down
        self.finished_at_kill: int | None = None
        self.requests_before_kill = 0
        self.restarted = False  # and answering
        self.requests_after_restart = 0
        self.error: str | None = None
        self.stopped = threading.Event()

    def finished(self) -> int:
        deployments = self.admin.get("/deployments")
        if not deployments:
            return 0
        statistics = deployments[0]["statistics"]
        return statistics["success"] + statistics["failure"]

    def run(self) -> None:
        try:
            while not self.stopped.wait(2):
                finished = self.finished()
                if finished >= self.threshold:
                    break
            else:
                return
            instance = self.cluster.instances[KILLED]
            self.cluster.kill(KILLED)
            self.finished_at_kill = finished
            self.requests_before_kill = device_requests(instance.output)
            time.sleep(self.down)
            self.cluster.restart(KILLED)
            self.restarted = True
            while True:  # what it serves until the end of the run
                self.requests_after_restart = device_requests(instance.output)
                if self.stopped.wait(2):
                    break
        except Exception as error:  # reported with the results
            self.error = f"{type(error).__name__}: {error}"


def device_requests(log: Path) -> int:
    """Requests of devices in an instance's request log (one JSON line each)."""
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if '"/api/devices/' in line)


def all_events(admin: ServerAdmin, deployment_id: str) -> list[dict]:
    found, after = [], 0
    while page := admin.get(f"/events?after={after}&limit=1000"):
        found += [e for e in page if e["data"].get("deployment_id") == deployment_id]
        after = page[-1]["id"]
    return found


def check(admin: ServerAdmin, report: dict, devices: int) -> tuple[dict, list[str]]:
    """What the server and the devices say, and each disagreement."""
    deployment = admin.get(f"/deployments/{report['deployment_id']}")
    statuses = {d["device_id"]: d["status"]
                for d in admin.get(f"/deployments/{deployment['id']}/devices")}
    seen = Counter(d["result"] for d in report["device"])
    statistics = {k: v for k, v in deployment["statistics"].items() if v}
    phases = deployment["phases"]
    events = all_events(admin, deployment["id"])
    finished_events = Counter(e["data"]["device_id"] for e in events
                              if e["type"] == "deployment.device_finished")
    event_status = {e["data"]["device_id"]: e["data"]["status"] for e in events
                    if e["type"] == "deployment.device_finished"}
    started_events = Counter(e["data"]["phase"] for e in events
                             if e["type"] == "deployment.phase_started")
    audit = [e for e in admin.get("/audit?limit=1000") if e["target"] == deployment["id"]]
    started_audit = Counter(e["detail"]["phase"] for e in audit
                            if e["action"] == "deployment.phase_start")
    problems = []

    def expect(what: str, actual, wanted) -> None:
        if actual != wanted:
            problems.append(f"{what}: {actual!r}, expected {wanted!r}")

    expect("devices in the deployment", len(statuses), devices)
    expect("the server's statistics vs the devices' results", statistics, dict(seen))
    expect("phase counters (successes)", sum(p["successes"] for p in phases),
           seen.get("success", 0))
    expect("phase counters (failures)", sum(p["failures"] for p in phases),
           seen.get("failure", 0))
    expect("phase sizes", sum(p["size"] for p in phases), devices)
    expect("attempts", deployment["attempts"], devices)
    expect("devices with a device_finished event", len(finished_events), devices)
    expect("device_finished events more than once",
           sorted(d for d, n in finished_events.items() if n > 1), [])
    expect("device_finished statuses unlike the server's",
           sum(event_status.get(device) != status for device, status in statuses.items()), 0)
    expect("phase_started events", dict(started_events), {n: 1 for n in range(1, 4)})
    expect("phase starts in the audit log", dict(started_audit), {n: 1 for n in range(1, 4)})
    expect("deployment.finished events",
           sum(e["type"] == "deployment.finished" for e in events), 1)
    expect("deployment status", deployment["status"], "finished")
    return {"statistics": statistics, "phases": [p["size"] for p in phases],
            "events": len(events)}, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--poll-interval", type=float, default=60.0,
                        help="also the spread of the devices' first boots")
    parser.add_argument("--retry-interval", type=float, default=10.0)
    parser.add_argument("--fleet-threads", type=int, default=32)
    parser.add_argument("--kill-at", type=float, default=0.4,
                        help="kill an instance once this share of the devices finished")
    parser.add_argument("--down", type=float, default=5.0, help="seconds it stays down")
    parser.add_argument("--fail-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=7200.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results, problems = run(args)
    rows = [*results.items(), ("problems", problems or "none")]
    width = max(len(key) for key, _ in rows)
    print("\n".join(f"{key:<{width}}  {value}" for key, value in rows))
    if args.json:
        args.json.write_text(json.dumps({**results, "problems": problems}, indent=1))
    return 1 if problems else 0


def run(args) -> tuple[dict, list[str]]:
    work = Path(tempfile.mkdtemp(prefix="tern-bench-scale-out-", dir="/dev/shm"))
    artifact, public = signed_release(work, 64 << 10)
    try:
        with ScaleOut() as cluster:
            admin = ServerAdmin(cluster.front)
            killer = Killer(cluster, admin, args.devices, args.kill_at, args.down)
            killer.start()
            started = time.monotonic()
            fleet = subprocess.run(
                [str(Path(sys.executable).parent / "tern-fleet"), "run",
                 "--server", cluster.nginx.url, "--ca-cert", str(cluster.certificate),
                 "--token", admin.token, "--devices", str(args.devices),
                 "--artifact", str(artifact), "--verify-key", str(public),
                 "--phases", json.dumps(PHASES), "--fail-rate", str(args.fail_rate),
                 "--poll-interval", str(args.poll_interval),
                 "--retry-interval", str(args.retry_interval),
                 "--threads", str(args.fleet_threads), "--workdir", str(work / "devices"),
                 "--timeout", str(args.timeout), "--seed", str(args.seed), "--json"],
                capture_output=True, text=True)
            wall = time.monotonic() - started
            killer.stopped.set()
            killer.join()  # after its restart, if it was under way
            if fleet.returncode not in (0, 1) or not fleet.stdout.startswith("{"):
                return {"devices": args.devices}, [f"tern-fleet: {fleet.stderr[-2000:]}"]
            report = json.loads(fleet.stdout)
            seen, problems = check(admin, report, args.devices)
            nginx_502 = (cluster.nginx.work / "access.log").read_text().count('" 502 ')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    problems += [f"tern-fleet: {kind}: {count}" for kind, count in report["problems"].items()
                 if count]
    if killer.error:
        problems.append(f"killing the instance: {killer.error}")
    if killer.finished_at_kill is None:
        problems.append("no instance was killed (the run ended first)")
    if not killer.requests_before_kill or not killer.restarted:
        problems.append(f"the killed instance served devices {killer.requests_before_kill} "
                        f"times before the kill and was restarted: {killer.restarted}")
    return {
        "devices": args.devices, "phases": seen["phases"], "poll_interval": args.poll_interval,
        "wall_seconds": round(wall, 1),
        "deployment_to_last_result_seconds": report["converge_seconds"],
        "update_p50_seconds": report["update_seconds"]["p50"],
        "update_p99_seconds": report["update_seconds"]["p99"],
        "killed_after_finished": killer.finished_at_kill,
        "killed_instance_device_requests": f"{killer.requests_before_kill} before the kill, "
                                           f"{killer.requests_after_restart} after its "
                                           "restart",
        "nginx_502_answers": nginx_502,
        "devices_results": report["results"], "server_statistics": seen["statistics"],
        "events": seen["events"],
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }, problems


if __name__ == "__main__":
    sys.exit(main())
