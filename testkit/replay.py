"""Flush-point replay of whole updates on the emulated device (`make replay`).

Each scenario is recorded once with every disk write logged (QEMU's blklogwrites, see
`qemu/replay.py`), from release-1's first boot to the end of the update:

- `install`: `tern-updater install --auto-reboot` of release-2 from release-1 (the
  artifact over HTTP), the reboot, the commit by the boot's `resume`;
- `rollback`: the same with release-broken (its kernel panics; U-Boot's bootcount rolls
  back to slot A and `resume` records the failure);
- `daemon`: `tern-updater daemon` enrolled on a live `tern-server` (HTTPS), a deployment of
  release-2 to it, up to the server's `success`.

Then `qemu.replay` boots one state of each group of byte-identical crash states (every
flush point, and seeded partial epochs between them) and checks it. `python -m
testkit.replay` runs the three in full and writes the section of RELIABILITY.md.
"""
import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qemu.device import Device, make_overlay
from qemu.replay import (
    CrashState,
    Expectations,
    Recording,
    ReplayReport,
    apply_extents,
    extents,
    read_log,
    replay,
    settle,
)
from testkit.http_files import serve_directory

SCENARIOS = ("install", "rollback", "daemon")
CONFIG = "/etc/tern/updater.toml"
DAEMON_CONFIG = "/data/tern/updater.toml"
BEFORE = "/data/before-update"


def wait_resumed(device: Device, config: str, timeout: float = 300) -> dict:
    """The updater's status once the boot's `resume` is over and it is idle."""
    status = settle(device, config, timeout)
    if status["state"] != "Idle":
        raise AssertionError(f"{device.name}: the updater is {status['state']} after {timeout} s")
    return status


def put_before_update(device: Device) -> dict[str, str]:
    """A file on /data that every crash state must keep; {path: sha256}."""
    output = device.run_check(f"head -c 65536 /dev/urandom > {BEFORE} && sync && "
                              f"sha256sum {BEFORE}")
    return {BEFORE: output.split()[0]}


def start_recording(images: Path, work: Path) -> Device:
    """A device on a fresh overlay of the image, every write logged from power-on."""
    work.mkdir(parents=True, exist_ok=True)
    disk = make_overlay(images / "disk.img", work / "recorded.qcow2")
    device = Device("recorded", disk, work / "console.log",
                    ssh_key=images / "keys" / "ssh_ed25519", boot_timeout=240,
                    write_log=work / "writes.log")
    device.power_on()
    device.expect_reboot()
    cache = device.run_check("cat /sys/block/vda/queue/write_cache").strip()
    if cache != "write back":  # else the guest never flushes: no flush points
        raise AssertionError(f"the guest sees a {cache!r} cache on its disk")
    return device


def update_begins(device: Device) -> int:
    """Sync, and return how many entries the log holds: the update starts after them."""
    device.run_check("sync")
    return len(read_log(device.write_log).writes)


def finish_recording(device: Device, images: Path, work: Path, scenario: str, start: int,
                     expect: Expectations) -> Recording:
    """Sync, power off; the base disk for the states is the image with the log's first
    `start` entries written (release-1 booted, the file on /data)."""
    device.run_check("sync")
    device.close()
    base = work / "base.raw"
    subprocess.run(["cp", "--sparse=always", str(images / "disk.img"), str(base)], check=True)
    log = read_log(device.write_log)
    apply_extents(log, extents(log, CrashState("start", "flush", start)), base)
    recording = Recording(work, base, device.write_log, start, expect, scenario)
    recording.save()
    return recording


def record_standalone(images: Path, work: Path, release: str, url: str, scenario: str) -> Recording:
    """release-1 -> `release` with `tern-updater install --auto-reboot URL`."""
    device = start_recording(images, work)
    try:
        wait_resumed(device, CONFIG)
        device.run_check(f"until wget -q -O /dev/null {url}/layout.json; do sleep 1; done",
                         timeout=120)  # udhcpc has its lease
        files = put_before_update(device)
        start = update_begins(device)
        device.console.sendline(f"tern-updater --config {CONFIG} install --auto-reboot "
                                f"{url}/{release}.mender; echo \"install exit $?\"")
        device.console.expect(r"install exit (\d+)", time.monotonic() + 900)
        if device.console.match.group(1) != "0":
            raise AssertionError(f"install of {release} exited {device.console.match.group(1)}")
        device.expect_reboot(timeout=300)
        status = wait_resumed(device, CONFIG)
        expected = "release-1" if release == "release-broken" else release
        if status["artifact_name"] != expected:
            raise AssertionError(f"the recorded update ended on {status['artifact_name']}")
        releases = ("release-1",) if expected == "release-1" else ("release-1", release)
        return finish_recording(device, images, work, scenario, start,
                                Expectations(releases, files, CONFIG))
    finally:
        device.close()


def record_daemon(images: Path, work: Path, admin) -> Recording:
    """release-1 -> release-2 deployed by a live tern-server (`admin`: testkit's
    ServerAdmin of it, release-2 uploaded) to the device's daemon."""
    from testkit.enroll import enroll

    device = start_recording(images, work)
    try:
        # Resume first stops the watchdog: enrolling while it starts can delay it past
        # the watchdog's 60 s on a loaded host.
        wait_resumed(device, CONFIG)
        device_id = enroll(admin, device, admin.live.port)
        wait_resumed(device, DAEMON_CONFIG)
        files = put_before_update(device)
        start = update_begins(device)
        deployment = admin.cli("deployments", "create", "--name", f"replay-{work.name}",
                               "--artifact-name", "release-2", "--device", device_id)["id"]
        device.expect_reboot(timeout=1200)  # the download, the install, the reboot
        deadline = time.monotonic() + 600
        while (status := admin.device_status(deployment, device_id)) not in (
                "success", "failure"):
            if time.monotonic() > deadline:
                raise AssertionError(f"the deployment is still {status}")
            time.sleep(3)
        if status != "success":
            raise AssertionError(f"the recorded deployment ended in {status}")
        wait_resumed(device, DAEMON_CONFIG)
        return finish_recording(device, images, work, "daemon", start,
                                Expectations(("release-1", "release-2"), files,
                                             DAEMON_CONFIG))
    finally:
        device.close()


HEADING = "## Power cuts that lose what real storage loses: flush-point replay"


def section(reports: list[ReplayReport], command: str, commit: str, seconds: float,
            not_run: list[str]) -> str:
    lines = [
        HEADING, "",
        f"`{command}` on {datetime.date.today()}, commit `{commit}`, "
        f"{seconds / 60:.0f} min.", "",
        "Killing QEMU keeps every write QEMU already passed to the host; real eMMC and SD "
        "cards lose what was not flushed. Here each scenario's whole update is recorded with "
        "QEMU's `blklogwrites` (every write with its FLUSH/FUA flags, the guest seeing a "
        "volatile write cache), then `qemu.replay` rebuilds the disk at every flush point "
        "and, between two, a seeded sample of what a volatile cache could leave (the epoch "
        "all lost, a prefix, a random subset, the last write torn at a sector). States "
        "byte-identical in the boot partition (environment copies), both slots and the data "
        "partition share one boot. Each booted state is powered on unattended and checked: "
        "a shell, the boot's `resume` over, the updater idle with no trial pending, the "
        "environment booting the running slot, a release of the update running and named by "
        "the updater, a /data file written before the update intact; from some, a fresh "
        "update (`tern-updater install` of the other release, reboot, commit). A boot "
        "costs 30–100 s under emulation; with `--limit N`, N distinct states per scenario "
        "are booted: one for each content of the boot partition (every environment the "
        "update wrote, torn ones included) first, then a seeded draw of the others.", "",
        "| scenario | log entries | flush points | sampled states | distinct states | "
        "booted | failures | fresh updates |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        fresh = sum(bool(b.verdict.updated_to) for b in report.booted)
        lines.append(f"| {report.scenario} | {report.entries} | {report.flush_points} | "
                     f"{report.states} | {len(report.groups)} | {len(report.booted)} | "
                     f"{len(report.failures)} | {fresh} |")
    if not_run:
        lines += ["", f"Not run yet: {', '.join(not_run)}."]
    failures = [(r, b) for r in reports for b in r.failures]
    lines += ["", "Failures:" if failures else "Failures: none."]
    lines += [f"- {r.scenario}, {b.group.representative.label} (stands for "
              f"{len(b.group.states)}): {'; '.join(b.verdict.problems)}" for r, b in failures]
    return "\n".join(lines) + "\n"


def replacing_section(text: str, previous: str) -> str:
    """RELIABILITY.md with this section in place of its previous version (or added)."""
    if HEADING not in previous:
        return previous.rstrip("\n") + "\n\n" + text
    before, after = previous.split(HEADING, 1)
    rest = after.split("\n## ", 1)
    return before + text + ("\n## " + rest[1] if len(rest) > 1 else "")


def run_scenario(scenario: str, images: Path, work: Path, url: str, admin, args) -> ReplayReport:
    if scenario == "daemon":
        recording = record_daemon(images, work, admin)
    else:
        release = "release-2" if scenario == "install" else "release-broken"
        recording = record_standalone(images, work, release, url, scenario)
    urls = {name: f"{url}/{name}.mender" for name in ("release-1", "release-2")}
    layout = json.loads((images / "layout.json").read_text())
    report = replay(recording, layout, images, work, args.seed, args.samples, args.limit,
                    args.fresh_updates, urls, progress=lambda line: print(line, flush=True))
    (work / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    from testkit.admin import ServerAdmin
    from testkit.live_server import LiveServer

    parser = argparse.ArgumentParser(prog="python -m testkit.replay", description=__doc__)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None,
                        help="boot at most this many distinct states per scenario")
    parser.add_argument("--fresh-updates", type=int, default=2)
    parser.add_argument("--images", type=Path, default=Path("build/images"))
    parser.add_argument("--out", type=Path, default=Path("build/replay"))
    parser.add_argument("--report", type=Path, default=Path("RELIABILITY.md"))
    args = parser.parse_args(argv)
    command = "make replay" if argv is None and len(sys.argv) == 1 else \
        "python -m testkit.replay " + " ".join(argv if argv is not None else sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    started = time.monotonic()
    reports: list[ReplayReport] = []
    with tempfile.TemporaryDirectory(prefix="tern-replay-") as scratch, \
            serve_directory(args.images) as url, \
            LiveServer(Path(scratch) / "server", names=("10.0.2.2",)) as live:
        admin = ServerAdmin(live)
        admin.cli("artifacts", "upload", str(args.images / "release-2.mender"))
        for scenario in args.scenarios:
            reports.append(run_scenario(scenario, args.images, args.out / scenario, url,
                                        admin, args))
            previous = args.report.read_text() if args.report.exists() else ""
            not_run = [s for s in args.scenarios if s not in {r.scenario for r in reports}]
            args.report.write_text(replacing_section(
                section(reports, command, commit, time.monotonic() - started, not_run),
                previous))
    print(f"wrote {args.report}", flush=True)
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
