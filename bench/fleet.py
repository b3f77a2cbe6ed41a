#!/usr/bin/env python3
"""Benchmark one deployment to many simulated devices: `tern-fleet` (each device the real
updater, payload verified and discarded) against `tern-server serve` (gunicorn, HTTPS).

    python -m bench.fleet [--devices 10000] [--workers 2] [--database sqlite|postgresql]
                          [--poll-interval 300] [--fleet-threads 32] [--power-cut-rate 0.2]

The devices are preauthorized, boot spread over one poll interval, and are deployed to
once all are accepted; the run ends when every device has reported its result. Measured:
wall time (whole run, and deployment → last result), the server's CPU seconds and peak
RSS (its gunicorn master and workers, from /proc, sampled every 0.5 s), the simulator's
own CPU and peak RSS, and p50/p99 of one device's update (Sync → result reported).
With `--power-cut-rate R`, round(N × R) devices lose power once at a random point of the
update (`make fleet-power-cuts`: 300 devices, 20 %); the results of the cut devices are
counted apart, by where the cut struck (a cut in the trial boot may fail; any other must
succeed, or the run fails).
The devices' directories are on /dev/shm: the state store's fsyncs would otherwise
measure this machine's disk, not the server.
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
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fleet.artifacts import write_rootfs_artifact
from fleet.simulator import TRIAL_BOOT_CUTS
from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer
from testkit.postgres import PostgresServer
from testkit.scale_out import process_tree

ROOT = Path(__file__).resolve().parent.parent

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class ProcessTreeSampler(threading.Thread):
    """CPU seconds and RSS of a process and its descendants, from /proc."""

    def __init__(self, root_pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.cpu: dict[int, float] = {}  # pid -> last seen CPU seconds
        self.baseline: dict[int, float] = {}
        self.peak_rss = 0
        self.stopped = threading.Event()

    def sample(self) -> None:
        rss = 0
        for pid in process_tree(self.root_pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
            self.baseline.setdefault(pid, cpu)
            self.cpu[pid] = cpu
            rss += pages * PAGE
        self.peak_rss = max(self.peak_rss, rss)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def start_measuring(self) -> None:
        self.sample()
        self.baseline = dict(self.cpu)
        self.start()

    def stop(self) -> tuple[float, int]:
        """(CPU seconds since start_measuring, peak RSS in bytes)."""
        self.sample()
        self.stopped.set()
        self.join()
        return sum(self.cpu[pid] - self.baseline.get(pid, 0.0) for pid in self.cpu), \
            self.peak_rss


def cut_results(report: dict) -> dict[str, dict[str, int]]:
    """The server's status of each device that lost power, by where the cut struck:
    "trial boot" or "elsewhere" (the download and the install included)."""
    counts: dict[str, dict[str, int]] = {"trial boot": {}, "elsewhere": {}}
    for device in report["device"]:
        if not device["power_cuts"]:
            continue
        where = "trial boot" if device["fault"] in TRIAL_BOOT_CUTS else "elsewhere"
        status = str(device["server_status"])
        counts[where][status] = counts[where].get(status, 0) + 1
    return counts


def signed_release(work: Path, size: int) -> tuple[Path, Path]:
    """release-2 for the simulated devices in `work`, signed with a new Ed25519 key: the
    artifact and the public key file the fleet verifies it with."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = work / "artifact.pub"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    artifact = write_rootfs_artifact(work / "release-2.mender", "release-2", "tern-simulated",
                                     key, size=size)
    return artifact, public


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--fleet-threads", type=int, default=32)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--poll-interval", type=float, default=300.0,
                        help="also the spread of the devices' first boots")
    parser.add_argument("--payload-kib", type=int, default=64)
    parser.add_argument("--power-cut-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tern-bench-fleet-", dir="/dev/shm"))
    artifact, public = signed_release(work, args.payload_kib << 10)
    postgres = PostgresServer().start() if args.database == "postgresql" else None
    live = LiveServer(Path(tempfile.mkdtemp(prefix="tern-bench-server-")) / "data",
                      workers=args.workers,
                      database_url=postgres.create_database("fleet") if postgres else None)
    live.start()  # gthread workers with serve's default threads per worker
    try:
        admin = ServerAdmin(live)
        sampler = ProcessTreeSampler(live.process.pid)
        sampler.start_measuring()
        started = time.monotonic()
        fleet = subprocess.run(
            ["/usr/bin/time", "-o", str(work / "time"), "-f", "%U %S %M",
             str(Path(sys.executable).parent / "tern-fleet"), "run", "--server", live.url,
             "--ca-cert", str(live.certificate), "--token", admin.token,
             "--devices", str(args.devices), "--artifact", str(artifact),
             "--verify-key", str(public), "--poll-interval", str(args.poll_interval),
             "--retry-interval", "30", "--threads", str(args.fleet_threads),
             "--workdir", str(work / "devices"), "--timeout", "7200", "--json",
             "--power-cut-rate", str(args.power_cut_rate), "--seed", str(args.seed)],
            capture_output=True, text=True)
        wall = time.monotonic() - started
        server_cpu, server_rss = sampler.stop()
    finally:
        live.stop()
        if postgres:
            postgres.stop()
        shutil.rmtree(live.data_dir.parent, ignore_errors=True)
    user, system, max_rss_kib = (work / "time").read_text().split()[-3:]
    shutil.rmtree(work, ignore_errors=True)
    if fleet.returncode not in (0, 1):
        print(fleet.stderr, file=sys.stderr)
        return 1
    report = json.loads(fleet.stdout)
    results = {
        "devices": args.devices, "database": args.database, "gunicorn_workers": args.workers,
        "poll_interval": args.poll_interval, "payload_kib": args.payload_kib,
        "wall_seconds": round(wall, 1),
        "deployment_to_last_result_seconds": report["converge_seconds"],
        "update_p50_seconds": report["update_seconds"]["p50"],
        "update_p99_seconds": report["update_seconds"]["p99"],
        "server_cpu_seconds": round(server_cpu, 1),
        "server_peak_rss_mib": round(server_rss / (1 << 20), 1),
        "simulator_cpu_seconds": round(float(user) + float(system), 1),
        "simulator_peak_rss_mib": round(int(max_rss_kib) / 1024, 1),
        "results": report["results"], "problems": report["problems"],
        **({"power_cut_results": cut_results(report)} if args.power_cut_rate else {}),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    rows = [(key, value) for key, value in results.items()]
    width = max(len(key) for key, _ in rows)
    print("\n".join(f"{key:<{width}}  {value}" for key, value in rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if not any(report["problems"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
