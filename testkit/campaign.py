"""Power-cut campaign: OTA deployments through a real tern-server to one emulated device,
with the power cut at chosen points, each followed by a check that the device converged.

A point is a named updater state or a percentage of the rootfs write, as the updater
announces them on the serial console (`console_markers`), plus an optional delay. For each
run: deploy a release, kill QEMU at each of the run's points in turn (powering on again
after each), wait for the server's final status, then check the device:

- a shell within the deadline (else: brick);
- the boot environment committed (no trial pending) on the slot that booted;
- /data intact: a file written before the campaign and one written before this run;
- the server's status matches the release running (success <-> the new release, failure
  <-> the one before), and so does the inventory's artifact_name (else: inconsistent);
- a good release cut only where the update goes on after power-on (RESUMING: the download,
  the rootfs write, the install, after the commit) ends in success (else: failed-update).

The device is reused from one run to the next. `python -m testkit.campaign --cuts N` (make
campaign) runs single-cut runs spread over the points and writes RELIABILITY.md.
"""
import argparse
import collections
import datetime
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from qemu.console import SHELL_PROMPT
from qemu.device import Device, make_overlay
from qemu.guest import release
from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.enroll import enroll
from testkit.live_server import LiveServer

GOOD = ("release-1", "release-2")
FAILING = ("release-broken", "release-unhealthy")
# The updater's states, as a deployment meets them; the last four only when it fails.
STATES = ("Sync", "Download", "ArtifactInstall", "ArtifactReboot", "ArtifactVerifyReboot",
          "ArtifactCommit", "Cleanup", "UpdateStatusReport", "ArtifactRollback",
          "ArtifactRollbackReboot", "ArtifactVerifyRollbackReboot", "ArtifactFailure")
ROLLBACK_STATES = frozenset(STATES[-4:])
# Cuts after which a good update goes on to success: the download and the write resume
# from their checkpoint, the install runs again, and after the commit nothing undoes it.
# (A cut in the trial boot counts as a failed boot: U-Boot falls back.)
RESUMING = frozenset({"Sync", "Download", "write", "ArtifactInstall", "Cleanup",
                      "UpdateStatusReport"})
FINAL = ("success", "failure")
SLOT_PARTITION = {"A": "2", "B": "3"}
STATE_MARKER = re.compile(r"tern-state: (\w+)\r?\n")
SETTLE_TIMEOUT = 600  # from the last power-on to the server's final status
MARKER_TIMEOUT = 600  # from the deployment (or a power-on) to the next point


@dataclass(frozen=True)
class Point:
    """Where to cut: `state` (e.g. "ArtifactInstall") or `write` (percent of the rootfs
    write), then `delay` seconds more."""

    state: str = ""
    write: int = 0
    delay: float = 0.0

    @property
    def label(self) -> str:
        return f"write {self.write}%" if self.write else self.state

    @property
    def bucket(self) -> str:
        """What RELIABILITY.md counts cuts by."""
        return "write" if self.write else self.state

    @property
    def pattern(self) -> str:
        if self.write:
            return rf"tern-write: {self.write}%"
        return rf"tern-state: {self.state}\r?\n"


@dataclass
class Run:
    """One deployment of `release` ("": the good release the device is not running), cut
    at each of `points` in turn."""

    release: str
    points: list[Point]


@dataclass
class Outcome:
    run: Run
    release: str  # the release deployed
    kind: str  # ok | brick | inconsistent | lost-data | failed-update
    deployment: str = ""
    # where the power was cut: the point, or the last state announced after its marker
    cut: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # points the deployment never passed
    status: str = ""  # the server's final status for the device
    slot: str = ""
    running: str = ""  # /etc/tern-release after the run
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log: Path | None = None


class Campaign:
    """One device, enrolled on `server`, and the releases in `images` uploaded."""

    def __init__(self, server: ServerAdmin, device: Device, images: Path,
                 log_dir: Path | None = None):
        self.server = server
        self.device = device
        self.images = images
        self.log_dir = log_dir
        self.device_id = ""
        self.running = "release-1"
        self.outcomes: list[Outcome] = []
        self.deployments = 0

    # -- set-up ------------------------------------------------------------------------

    def enroll(self) -> None:
        """Boot release-1, point the daemon at the server with console markers, accept it;
        upload the releases."""
        self.device_id = enroll(self.server, self.device, self.server.live.port,
                                {"console_markers": '"/dev/console"'})
        self.before_campaign = self.put_random_file("/data/before-campaign")
        for name in (*GOOD, *FAILING):
            self.server.cli("artifacts", "upload", str(self.images / f"{name}.mender"))

    def put_random_file(self, path: str) -> str:
        """64 KiB of random data on the device, synced; returns its sha256."""
        output = self.device.run_check(f"head -c 65536 /dev/urandom > {path} && sync && "
                                       f"sha256sum {path}")
        return output.split()[0]

    def next_good(self) -> str:
        return GOOD[1] if self.running == GOOD[0] else GOOD[0]

    # -- one run -----------------------------------------------------------------------

    def run(self, run: Run) -> Outcome:
        device = self.device
        started = time.monotonic()
        log_start = device.log_path.stat().st_size
        self.deployments += 1
        before_run = self.put_random_file("/data/before-run")
        previous = self.running
        target = run.release or self.next_good()
        deployment = self.server.cli("deployments", "create", "--name",
                                     f"cut-{self.deployments}", "--artifact-name", target,
                                     "--device", self.device_id)["id"]
        outcome = Outcome(run, target, "ok", deployment)
        for number, point in enumerate(run.points):
            if not self.watch(point.pattern, deployment):  # the deployment is over
                outcome.missed += [later.label for later in run.points[number:]]
                break
            time.sleep(point.delay)
            announced = STATE_MARKER.findall(device.power_cut())
            device.transition("uboot")  # as a power-on, less the 2 s autoboot delay
            device.console.sendline("boot")
            outcome.cut.append(announced[-1] if announced else point.label)
        self.watch(None, deployment, SETTLE_TIMEOUT)
        outcome.status = self.status(deployment)
        self.check(outcome, previous, before_run)
        outcome.seconds = time.monotonic() - started
        if outcome.kind != "ok" and self.log_dir:
            outcome.log = self.save_log(log_start, len(self.outcomes) + 1, outcome)
        self.outcomes.append(outcome)
        return outcome

    def watch(self, pattern: str | None, deployment: str,
              timeout: float = MARKER_TIMEOUT) -> bool:
        """Read the console until `pattern` shows (True) or the server has the deployment's
        final status (False); None: only the latter."""
        console = self.device.console
        deadline = time.monotonic() + timeout
        patterns = [pexpect.TIMEOUT, pexpect.EOF] + ([pattern] if pattern else [])
        while time.monotonic() < deadline:
            index = console.expect(patterns, min(time.monotonic() + 2, deadline))
            if index == 2:
                return True
            if index == 1 or self.status(deployment) in FINAL:
                return False
        return False

    def status(self, deployment: str) -> str:
        try:
            return self.server.device_status(deployment, self.device_id)
        except Exception as error:  # the server is the thing under test too: note it
            return f"unknown ({error})"

    def shell(self) -> bool:
        """Is the device at its shell prompt? (Sets the booted slot.)

        The console's buffer still holds what `watch` read, prompts of earlier boots
        included: the slot is read from the prompt after a marker-framed command."""
        device = self.device
        if device.state == "off":
            return False
        try:
            device.console.sendline()
            device.console.expect(SHELL_PROMPT, time.monotonic() + 30)
            device.console.run("true", time.monotonic() + 30)
        except (pexpect.TIMEOUT, pexpect.EOF):
            return False
        device.state, device.slot = "shell", device.console.match.group(1)
        return True

    def check(self, outcome: Outcome, previous: str, before_run: str) -> None:
        device, problems = self.device, outcome.problems
        if not self.shell():
            outcome.kind = "brick"
            problems.append(f"no shell; server status {outcome.status}")
            return
        outcome.slot = device.slot
        outcome.running = release(device)
        env = dict(line.split("=", 1) for line in
                   device.run_check("fw_printenv upgrade_available mender_boot_part")
                   .splitlines() if "=" in line)
        if env.get("upgrade_available") != "0":
            problems.append(f"trial pending: upgrade_available={env.get('upgrade_available')}")
        if env.get("mender_boot_part") != SLOT_PARTITION[device.slot]:
            problems.append(f"booted slot {device.slot}, mender_boot_part="
                            f"{env.get('mender_boot_part')}")
        expected = {"success": outcome.release, "failure": previous}.get(outcome.status)
        if expected is None:
            problems.append(f"no final status: the server shows {outcome.status}")
        elif outcome.running != expected:
            problems.append(f"server: {outcome.status}, device runs {outcome.running}")
        try:
            wait_for(lambda: self.server.attributes(self.device_id).get("artifact_name")
                     == outcome.running, timeout=90, interval=2, what="the inventory")
        except AssertionError:
            problems.append(f"inventory: artifact_name="
                            f"{self.server.attributes(self.device_id).get('artifact_name')}, "
                            f"device runs {outcome.running}")
        if problems:
            outcome.kind = "inconsistent"
        buckets = {"write" if cut.startswith("write") else cut for cut in outcome.cut}
        if outcome.release in GOOD and buckets <= RESUMING and outcome.status != "success":
            outcome.kind = outcome.kind if problems else "failed-update"
            problems.append(f"a good update cut at {', '.join(outcome.cut)} ended in "
                            f"{outcome.status}")
        sums = device.run_check("sha256sum /data/before-campaign /data/before-run; true")
        for name, digest in (("before-campaign", self.before_campaign),
                             ("before-run", before_run)):
            if f"{digest}  /data/{name}" not in sums:
                outcome.kind = "lost-data"
                problems.append(f"/data/{name}: sha256 changed or file gone: {sums.strip()}")
        self.running = outcome.running

    def save_log(self, start: int, number: int, outcome: Outcome) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p.label for p in outcome.run.points))
        path = self.log_dir / f"{number:03d}-{outcome.release}-{name}.log"
        with open(self.device.log_path, "rb") as log:
            log.seek(start)
            path.write_bytes(log.read())
        return path


# -- plans ---------------------------------------------------------------------------------

def single_cuts(count: int, rng: random.Random) -> list[Run]:
    """`count` one-cut runs, round robin over the states and a random point of the write.

    Cuts on the rollback states go with a failing release (broken and unhealthy in turn);
    the others with the good release the device is not running."""
    buckets = [*STATES, "write"]
    runs = []
    for number in range(count):
        bucket = buckets[number % len(buckets)]
        if bucket == "write":
            runs.append(Run("", [Point(write=rng.randrange(10, 100, 10),
                                       delay=rng.uniform(0, 2))]))
        else:
            # several states last well under 0.1 s: a longer delay cuts the next one
            runs.append(aimed_at(bucket, rng.uniform(0, 0.05), len(runs)))
    return runs


def aimed_at(state: str, delay: float = 0.0, number: int = 0) -> Run:
    """A run cut at `state`: with the good release the device is not running, or, for a
    rollback state, with a failing one (broken for even `number`s, unhealthy for odd)."""
    release = FAILING[number % 2] if state in ROLLBACK_STATES else ""
    return Run(release, [Point(state=state, delay=delay)])


def reliability_report(campaign: Campaign, commit: str, seed: int, seconds: float,
                       planned: int | None = None) -> str:
    outcomes = campaign.outcomes
    planned = planned or len(outcomes)
    kinds = collections.Counter(o.kind for o in outcomes)
    statuses = collections.Counter(o.status for o in outcomes)
    buckets = collections.Counter(point for o in outcomes for point in
                                  [("write" if c.startswith("write") else c) for c in o.cut])
    missed = sum(len(o.missed) for o in outcomes)
    # A run's cuts follow its points in order (the first point missed ends the run's cuts).
    drifted = sum(cut != point.label for o in outcomes
                  for point, cut in zip(o.run.points, o.cut, strict=False))
    lines = [
        "# Reliability: power cuts during over-the-air updates", "",
        f"`make campaign N={planned}` on {datetime.date.today()}, commit `{commit}`, "
        f"seed {seed}: {len(outcomes)} of {planned} runs done in {seconds / 60:.0f} min.", "",
        "One emulated device (QEMU TCG, real U-Boot, A/B slots) runs `tern-updater daemon` "
        "against `tern-server` (HTTPS, SQLite). Each run deploys a release and kills QEMU "
        "when the updater announces the chosen point on the console (a state, or a 10 % "
        "step of the rootfs write) plus a random delay (0–0.05 s; 0–2 s for the write), powers "
        "it on, waits for the server's final status and checks the device (`testkit/campaign.py`). "
        "A cut counts under the last state the updater announced before the power went: "
        "with the delay, it may land a state or more after the marker it waited for. "
        "Rollback states are cut with release-broken (never boots) and release-unhealthy "
        "(fails its health check) in turn, the others with release-1 / release-2 in turn.",
        "",
        f"- runs (one cut each): {len(outcomes)}; cuts made: {sum(buckets.values())}; "
        f"points never reached: {missed}; cuts that landed past the point they waited for: "
        f"{drifted}",
        f"- **bricks** (no shell): {kinds['brick']}",
        f"- **inconsistent reports** (status, inventory or boot environment against the "
        f"running release): {kinds['inconsistent']}",
        f"- **lost data** (/data files written before the run): {kinds['lost-data']}",
        f"- **failed updates** (a good release cut only where the update goes on: the "
        f"download, the write, the install, after the commit): {kinds['failed-update']}",
        f"- ok: {kinds['ok']}; final statuses: "
        + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())), "",
        "| cut at | cuts | ok | success | failure |", "|---|---:|---:|---:|---:|",
    ]
    for bucket in [*STATES, "write"]:
        these = [o for o in outcomes if any(
            ("write" if c.startswith("write") else c) == bucket for c in o.cut)]
        lines.append(f"| {bucket} | {len(these)} | {sum(o.kind == 'ok' for o in these)} | "
                     f"{sum(o.status == 'success' for o in these)} | "
                     f"{sum(o.status == 'failure' for o in these)} |")
    failures = [o for o in outcomes if o.kind != "ok"]
    lines += ["", "## Failures", ""]
    lines += [f"- {o.release}, cut at {', '.join(o.cut)}: **{o.kind}**: "
              f"{'; '.join(o.problems)} (console: `{o.log}`)" for o in failures] or ["None."]
    return "\n".join(lines) + "\n"


CAMPAIGN_HEADINGS = ("## Failures",)


def keeping_other_sections(report: str, previous: str) -> str:
    """`report` in place of the campaign's part of RELIABILITY.md (its title, counts and
    `## Failures`), followed by the sections other results wrote there (the watchdog's)."""
    lines = previous.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.startswith("## ") and line.rstrip() not in CAMPAIGN_HEADINGS:
            return report + "\n" + "".join(lines[number:])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.campaign", description=__doc__)
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--images", type=Path, default=Path("build/images"))
    parser.add_argument("--out", type=Path, default=Path("build/campaign"))
    parser.add_argument("--report", type=Path, default=Path("RELIABILITY.md"))
    args = parser.parse_args(argv)
    previous = args.report.read_text() if args.report.exists() else ""
    seed = args.seed if args.seed is not None else time.time_ns() % 1_000_000
    rng = random.Random(seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="tern-campaign-"))
    live = device = None
    started = time.monotonic()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    try:
        live = LiveServer(work / "server", names=("10.0.2.2",))
        live.output = args.out / "server.log"
        live.start()
        device = Device("campaign", make_overlay(args.images / "disk.img", work / "dev.qcow2"),
                        args.out / "console.log", ssh_key=args.images / "keys" / "ssh_ed25519")
        campaign = Campaign(ServerAdmin(live), device, args.images, args.out)
        campaign.enroll()
        print(f"seed {seed}; device enrolled; {args.cuts} cuts", flush=True)
        for number, run in enumerate(single_cuts(args.cuts, rng), 1):
            outcome = campaign.run(run)
            print(f"[{number}/{args.cuts}] {outcome.release:17} aimed at "
                  f"{run.points[0].label:28} cut at {', '.join(outcome.cut) or '-':28} "
                  f"-> {outcome.status:8} {outcome.kind:12} slot {outcome.slot} "
                  f"{outcome.running} {outcome.seconds:4.0f} s "
                  f"{'; '.join(outcome.problems + [f'missed {m}' for m in outcome.missed])}",
                  flush=True)
            report = reliability_report(  # after each run: a partial one counts
                campaign, commit, seed, time.monotonic() - started, args.cuts)
            args.report.write_text(keeping_other_sections(report, previous))
            if outcome.kind == "brick":
                print("bricked: the campaign stops here", flush=True)
                break
    finally:
        if device:
            device.close()
        if live:
            live.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.report}", flush=True)
    bad = [o for o in campaign.outcomes if o.kind != "ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
