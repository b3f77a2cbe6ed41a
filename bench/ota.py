"""Over-the-air update, end to end: deployment creation to success on one emulated device,
and its parts, beside a baseline on the same device and machine.

    .venv/bin/python -m bench.ota [--runs N]

tern-server (HTTPS, SQLite) on the host; one QEMU device (TCG) running `tern-updater
daemon` with console markers; deployments alternate release-2 / release-1 (each writes
the other slot). The parts come from the host's clock as the markers arrive on the serial
console. Baseline, from the same device's shell: the same image fetched over plain HTTP
with busybox wget and written by dd into the inactive slot (raw, and gzip through gunzip,
as the artifact carries it); the gzip image again over HTTPS as the agent fetches it (the
server's certificate and TLS settings, `server.tls`), by the device's one HTTPS client
that checks a certificate, Python's (busybox wget does not check it); and a bare `reboot`
to the shell (twice: the second split into its parts as the deployment's reboot is). Each
run is a deployment, then the baseline (its reboots first), on the same device, so that a
machine whose speed drifts over minutes weighs on both alike. Prints Markdown tables
(medians, min, max) and the ratio of the medians.
"""
import argparse
import gzip
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qemu.device import UBOOT_BANNER, Device, make_overlay
from server.tls import server_context
from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.campaign import Campaign
from testkit.http_files import serve_directory
from testkit.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ROOT / "build" / "images"
# What the console shows of a reboot, in order: the end of the shutdown, U-Boot's end, and
# the end of the boot script (rcS, whose last line comes before the prompt).
REBOOT = [
    ("U-Boot starts", UBOOT_BANNER),
    ("kernel starts", "Starting kernel"),
    ("init's rcS done", "tern: booted slot"),
]
# What the console shows of a successful deployment, in order.
MILESTONES = [
    ("picked up", "tern-state: Sync"),
    ("download starts", "tern-state: Download"),
    ("written", "tern-write: 100%"),
    ("read back, trial set", "tern-state: ArtifactReboot"),
    *REBOOT,
    ("updater runs on the new slot", "tern-state: ArtifactVerifyReboot"),
    ("committed", "tern-state: Cleanup"),
    ("daemon reports", "tern-state: UpdateStatusReport"),
]
PARTS = [
    ("poll: deployment created -> picked up", None, "picked up"),
    ("download + verify + write (192 MiB)", "download starts", "written"),
    ("read-back check, trial boot set", "written", "read back, trial set"),
    ("reboot: U-Boot, kernel, init, updater start", "read back, trial set",
     "updater runs on the new slot"),
    ("- of it: shutdown", "read back, trial set", "U-Boot starts"),
    ("- of it: U-Boot", "U-Boot starts", "kernel starts"),
    ("- of it: kernel, initramfs, rcS", "kernel starts", "init's rcS done"),
    ("- of it: the updater's start", "init's rcS done", "updater runs on the new slot"),
    ("health checks + commit", "updater runs on the new slot", "committed"),
    ("daemon start + status report", "committed", "success on the server"),
    ("**deployment created -> success**", None, "success on the server"),
]


def deployment_timeline(campaign: Campaign, release: str) -> dict[str, float]:
    """Seconds from the deployment's creation to each milestone."""
    server, console = campaign.server, campaign.device.console
    deployment = server.cli("deployments", "create", "--name", f"bench-{time.time_ns()}",
                            "--artifact-name", release, "--device", campaign.device_id)["id"]
    created = time.monotonic()
    times = {}
    for name, marker in MILESTONES:
        console.expect(marker, created + 900)
        times[name] = time.monotonic() - created
    wait_for(lambda: server.device_status(deployment, campaign.device_id) == "success",
             timeout=300, interval=0.2, what="success on the server")
    times["success on the server"] = time.monotonic() - created
    campaign.running = release
    return times


def tls_like(live: LiveServer) -> ssl.SSLContext:
    """A server context with `live`'s certificate and tern-server's TLS settings."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(live.certificate, live.certificate.with_suffix(".key"))
    return server_context(None, lambda: context)


def timed_run(device: Device, command: str) -> float:
    start = time.monotonic()
    device.run_check(command, timeout=600)
    return time.monotonic() - start


# The device's HTTPS download to stdout, checking the server's certificate as the agent does.
HTTPS_GET = ("python3 -c 'import shutil, ssl, sys, urllib.request; "
             "context = ssl.create_default_context(cafile=\"/data/tern/server.crt\"); "
             "shutil.copyfileobj(urllib.request.urlopen(sys.argv[1], context=context), "
             "sys.stdout.buffer, 1 << 20)'")


PLAIN = "wget, gunzip, dd: gzip image"
OVER_HTTPS = "python3 over HTTPS, gunzip, dd: gzip image"
REBOOTED = "bare `reboot` -> shell"


def baseline(device: Device, url: str, tls_url: str) -> dict[str, float]:
    """Two bare reboots, then the copies into the inactive slot, from the device's shell
    (the copies last: the next deployment then finds the daemon started and polling)."""
    reboots = bare_reboots(device)
    inactive = "/dev/vda2" if device.slot == "B" else "/dev/vda3"
    return {
        "wget, dd: raw image": timed_run(
            device, f"wget -q -O - {url}/release-2.ext4 | dd of={inactive} bs=1M conv=fsync "
                    "2>/dev/null"),
        PLAIN: timed_run(
            device, f"wget -q -O - {url}/release-2.ext4.gz | gunzip | dd of={inactive} bs=1M "
                    "conv=fsync 2>/dev/null"),
        OVER_HTTPS: timed_run(
            device, f"{HTTPS_GET} {tls_url}/release-2.ext4.gz | gunzip | "
                    f"dd of={inactive} bs=1M conv=fsync 2>/dev/null"),
        **reboots,
    }


def bare_reboots(device: Device) -> dict[str, float]:
    """`reboot` to the shell, twice: the second split into its parts."""
    device.console.sendline("reboot")
    start = time.monotonic()
    device.expect_reboot(timeout=300)
    times = {REBOOTED: time.monotonic() - start}
    device.console.sendline("reboot")
    start, reached = time.monotonic(), {}
    for name, marker in REBOOT:
        device.console.expect(marker, start + 300)
        reached[name] = time.monotonic() - start
    device.state = "booting"
    device.await_shell(start + 300)
    reached["shell"] = time.monotonic() - start
    times["- a second one: shutdown"] = reached["U-Boot starts"]
    times["- a second one: U-Boot"] = reached["kernel starts"] - reached["U-Boot starts"]
    times["- a second one: kernel, initramfs, rcS"] = (reached["init's rcS done"]
                                                       - reached["kernel starts"])
    times["- a second one: rcS done -> shell"] = reached["shell"] - reached["init's rcS done"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="deployments (alternating)")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "images" / "build.py")], check=True)
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tern-bench-ota-"))
    live = device = None
    try:
        with open(IMAGES / "release-2.ext4", "rb") as raw, \
                gzip.open(work / "release-2.ext4.gz", "wb", compresslevel=6) as packed:
            shutil.copyfileobj(raw, packed, 1 << 20)
        (work / "release-2.ext4").symlink_to(IMAGES / "release-2.ext4")
        live = LiveServer(work / "server", names=("10.0.2.2",)).start()
        device = Device("bench", make_overlay(IMAGES / "disk.img", work / "bench.qcow2"),
                        work / "console.log")
        campaign = Campaign(ServerAdmin(live), device, IMAGES)
        campaign.enroll()
        runs, bases = [], []
        with serve_directory(work) as url, serve_directory(work, tls_like(live)) as tls_url:
            for number in range(args.runs):
                release = campaign.next_good()
                runs.append(deployment_timeline(campaign, release))
                if not campaign.shell():
                    raise RuntimeError("no shell after the deployment")
                bases.append(baseline(device, url, tls_url))
                print(f"run {number + 1}: {release}: "
                      f"{runs[-1]['success on the server']:.1f} s to success; baseline "
                      f"{bases[-1][PLAIN]:.1f} s + {bases[-1][REBOOTED]:.1f} s", flush=True)
    finally:
        if device:
            device.close()
        if live:
            live.stop()
        load = os.getloadavg()[0]
    print(f"\n1-minute load average: {load_at_start:.2f} at the start, {load:.2f} at the end\n")
    print(f"| part ({args.runs} deployments, seconds) | median | min | max |")
    print("|---|---:|---:|---:|")
    for label, start, end in PARTS:
        samples = [run[end] - (run[start] if start else 0.0) for run in runs]
        print(f"| {label} | {statistics.median(samples):.1f} | {min(samples):.1f} | "
              f"{max(samples):.1f} |")
    print(f"\n| baseline, same device ({args.runs} runs, seconds) | median | min | max |")
    print("|---|---:|---:|---:|")
    for label in bases[0]:
        samples = [base[label] for base in bases]
        print(f"| {label} | {statistics.median(samples):.1f} | {min(samples):.1f} | "
              f"{max(samples):.1f} |")
    update = statistics.median(run["success on the server"] for run in runs)
    for copy in (PLAIN, OVER_HTTPS):
        reference = statistics.median(base[copy] + base[REBOOTED] for base in bases)
        print(f"\ndeployment -> success / ({copy} + bare reboot), medians: "
              f"{update:.1f} / {reference:.1f} = **{update / reference:.2f}x**")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
