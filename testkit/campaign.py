"""Power-cut campaign: OTA deployments through a real tern-server to emulated devices,
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

Each cut is checked against its plan: the console's last marker before the power went
(a state, or the slot offset the rootfs write had reached) tells the window it landed in;
a cut that landed in another window than the planned one, or a point never reached, is a
miss, counted in the report.

With `--delta` (make campaign DELTA=1) every release is deployed as a block-indexed
artifact, so the device installs it adaptively (only the blocks its slots lack, by HTTP
Range), and each run is also checked to have gone adaptive by the deployment log's
download stats (else: not-adaptive, a fallback to the full install).

A device is reused from one run to the next. `python -m testkit.campaign --cuts N
--parallel K` (make campaign) runs single-cut runs weighted toward the write windows on K
devices at once, each with its own disk overlay, server and ports, and writes
RELIABILITY.md (with `--delta`, its own section there).
"""
import argparse
import collections
import datetime
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from qemu.console import SHELL_PROMPT
from qemu.device import Device, DeviceError, make_overlay
from qemu.guest import release
from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.enroll import enroll
from testkit.live_server import LiveServer

GOOD = ("release-1", "release-2")
FAILING = ("release-broken", "release-unhealthy")
# --delta: three good releases in turn (`make delta-images`' pairs of release-1). An A/B
# device's target slot holds the release before last: with two in turn, the way back
# would find every block in place and write nothing.
DELTA_GOOD = ("release-1", "release-1-package", "release-1-config")
# what --delta writes itself with a block index: the releases `make image` writes without
INDEXED_HERE = ("release-1", *FAILING)
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
# The last of these before a cut tells where it landed: a state, or the slot offset written.
CUT_MARKER = re.compile(r"tern-state: (\w+)\r?\n|tern-written: (\d+)\r?\n")
# Cuts are weighted toward the write windows (a cut while the device only reads proves
# little): the slot write; the steps that write the boot environment (the trial in
# ArtifactInstall, the commit, the rollback); every other state gets weight 1 and is cut
# 0-0.05 s after its state store write.
WEIGHTS = {"write": 8, "ArtifactInstall": 3, "ArtifactCommit": 3, "ArtifactRollback": 3}
SETTLE_TIMEOUT = 600  # from the last power-on to the server's final status
MARKER_TIMEOUT = 600  # from the deployment (or a power-on) to the next point
ENROL_ATTEMPTS = 3
BOOT_TIMEOUT = 300  # power-on to the shell, server start: minutes under nice, loaded


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
    # where the power was cut, by the console's last marker: a state, or "write at byte N"
    cut: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # points the deployment never passed
    status: str = ""  # the server's final status for the device
    slot: str = ""
    running: str = ""  # /etc/tern-release after the run
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log: Path | None = None
    device: str = ""  # which of the campaign's devices ran it
    download: str = ""  # the deployment log's download stats: adaptive | full | "" (none)

    def landed(self) -> list[tuple[Point, str]]:
        """Each cut's point beside the window it landed in ("write" or a state)."""
        return [(point, bucket(cut)) for point, cut in zip(self.run.points, self.cut,
                                                           strict=False)]

    @property
    def misses(self) -> int:
        """Cuts that landed outside their planned window, and points never reached."""
        return len(self.missed) + sum(point.bucket != where for point, where in self.landed())


def bucket(cut: str) -> str:
    return "write" if cut.startswith("write") else cut


class Campaign:
    """One device, enrolled on `server`, and the releases in `images` uploaded; with
    `indexed` (a directory of block-indexed artifacts, `indexed_artifacts`), those instead
    and DELTA_GOOD as the good releases, each install checked to have gone adaptive."""

    def __init__(self, server: ServerAdmin, device: Device, images: Path,
                 log_dir: Path | None = None, indexed: Path | None = None):
        self.server = server
        self.device = device
        self.images = images
        self.log_dir = log_dir
        self.indexed = indexed
        self.good = DELTA_GOOD if indexed else GOOD
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
        for name in (*self.good, *FAILING):
            self.server.cli("artifacts", "upload",
                            str((self.indexed or self.images) / f"{name}.mender"))

    def put_random_file(self, path: str) -> str:
        """64 KiB of random data on the device, synced; returns its sha256."""
        output = self.device.run_check(f"head -c 65536 /dev/urandom > {path} && sync && "
                                       f"sha256sum {path}")
        return output.split()[0]

    def next_good(self) -> str:
        return next_in_turn(self.good, self.running)

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
        outcome = Outcome(run, target, "ok", deployment, device=device.name)
        for number, point in enumerate(run.points):
            if not self.watch(point.pattern, deployment):  # the deployment is over
                outcome.missed += [later.label for later in run.points[number:]]
                break
            time.sleep(point.delay)
            outcome.cut.append(where_cut(device.power_cut(), point))
            device.transition("uboot")  # as a power-on, less the 2 s autoboot delay
            device.console.sendline("boot")
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
        buckets = {bucket(cut) for cut in outcome.cut}
        if outcome.release in self.good and buckets <= RESUMING and \
                outcome.status != "success":
            outcome.kind = outcome.kind if problems else "failed-update"
            problems.append(f"a good update cut at {', '.join(outcome.cut)} ended in "
                            f"{outcome.status}")
        sums = device.run_check("sha256sum /data/before-campaign /data/before-run; true")
        for name, digest in (("before-campaign", self.before_campaign),
                             ("before-run", before_run)):
            if f"{digest}  /data/{name}" not in sums:
                outcome.kind = "lost-data"
                problems.append(f"/data/{name}: sha256 changed or file gone: {sums.strip()}")
        self.check_download(outcome)
        self.running = outcome.running

    def check_download(self, outcome: Outcome) -> None:
        """Note how the device downloaded; with `indexed`, anything but an adaptive install
        is a problem (not-adaptive, unless the run is already worse)."""
        outcome.download = self.download_mode(outcome.deployment)
        if self.indexed and outcome.download != "adaptive":
            outcome.kind = outcome.kind if outcome.kind != "ok" else "not-adaptive"
            outcome.problems.append(not_adaptive(outcome.download,
                                                 self.log(outcome.deployment)))

    def download_mode(self, deployment: str) -> str:
        """How the device downloaded the deployment, by its log's last download stats
        (the server's `download` of the device): adaptive, full or ""."""
        try:
            [row] = [r for r in self.server.get(f"/deployments/{deployment}/devices")
                     if r["device_id"] == self.device_id]
        except Exception:  # the server is the thing under test too
            return ""
        return (row.get("download") or {}).get("mode", "")

    def log(self, deployment: str) -> list[str]:
        try:
            return self.server.device_log(deployment, self.device_id)
        except Exception:
            return []

    def save_log(self, start: int, number: int, outcome: Outcome) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p.label for p in outcome.run.points))
        path = self.log_dir / f"{self.device.name}-{number:03d}-{outcome.release}-{name}.log"
        with open(self.device.log_path, "rb") as log:
            log.seek(start)
            path.write_bytes(log.read())
        return path


# -- plans ---------------------------------------------------------------------------------

def not_adaptive(download: str, log: list[str]) -> str:
    """The problem of an install that did not go adaptive: its download stats, and the
    reason of the last fallback its deployment log gives."""
    fallbacks = [line for line in log if line.endswith("; downloading the full artifact")]
    return (f"not an adaptive install: download stats {download or 'none'}"
            + (f" ({fallbacks[-1]})" if fallbacks else ""))


def next_in_turn(releases: tuple[str, ...], running: str) -> str:
    """The release after `running` in `releases` (the first if it runs none of them)."""
    at = releases.index(running) if running in releases else -1
    return releases[(at + 1) % len(releases)]


def indexed_artifacts(images: Path, out: Path) -> Path:
    """`out` with a block-indexed artifact of each release --delta deploys: those of
    INDEXED_HERE written from `images`' rootfs images with `tern-artifact write
    rootfs-image --block-index` (as images/build.py writes the others), the delta pairs
    of `make delta-images` linked."""
    layout = json.loads((images / "layout.json").read_text())
    pairs = [images / f"{name}.mender" for name in DELTA_GOOD if name not in INDEXED_HERE]
    for pair in pairs:
        if not pair.exists():
            raise SystemExit(f"campaign: no {pair}: run `make delta-images`")
    out.mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        (out / pair.name).symlink_to(pair.resolve())
    for name in INDEXED_HERE:
        artifact = out / f"{name}.mender"
        subprocess.run([sys.executable, "-m", "artifact.cli", "write", "rootfs-image",
                        "-f", images / f"{name}.ext4", "-n", name,
                        "-t", layout["device_type"], "-k", images / layout["keys"]["artifact"],
                        "-o", artifact, "--block-index"], check=True, capture_output=True)
    return out


def where_cut(unread: str, point: Point) -> str:
    """Where the power went, by the last marker the console printed after `point`'s own
    (`unread`): a state, or "write at byte N" (the slot offset the write had reached);
    without one, `point` itself (for the write, the offset printed with its marker)."""
    markers = CUT_MARKER.findall(unread)
    if not markers:
        return point.label
    state, written = markers[-1]
    return state or f"write at byte {written}"


def weighted_cuts(count: int, rng: random.Random) -> list[Run]:
    """`count` one-cut runs in a seeded random order, shared among the states and the
    write in proportion to `WEIGHTS` (largest remainders; from 13 runs on, each at least
    once): the write at a random 10 % step plus 0-1 s, a state 0-0.05 s after its marker.

    Cuts on the rollback states go with a failing release (broken and unhealthy in turn);
    the others with the good release the device is not running."""
    buckets = [*STATES, "write"]
    weights = [WEIGHTS.get(name, 1) for name in buckets]
    each = 1 if count >= len(buckets) else 0
    shares = [(count - each * len(buckets)) * weight / sum(weights) for weight in weights]
    counts = [each + int(share) for share in shares]
    by_remainder = sorted(range(len(buckets)),
                          key=lambda i: (int(shares[i]) - shares[i], rng.random()))
    for index in by_remainder[:count - sum(counts)]:
        counts[index] += 1
    runs = []
    for name, number in zip(buckets, counts, strict=True):
        for _ in range(number):
            if name == "write":
                runs.append(Run("", [Point(write=rng.randrange(10, 100, 10),
                                           delay=rng.uniform(0, 1))]))
            else:
                # several states last well under 0.1 s: a longer delay cuts the next one
                runs.append(aimed_at(name, rng.uniform(0, 0.05), len(runs)))
    rng.shuffle(runs)
    return runs


def aimed_at(state: str, delay: float = 0.0, number: int = 0) -> Run:
    """A run cut at `state`: with the good release the device is not running, or, for a
    rollback state, with a failing one (broken for even `number`s, unhealthy for odd)."""
    release = FAILING[number % 2] if state in ROLLBACK_STATES else ""
    return Run(release, [Point(state=state, delay=delay)])


def reliability_report(outcomes: list[Outcome], commit: str, seed: int, seconds: float,
                       planned: int | None = None, parallel: int = 1,
                       delta: bool = False) -> str:
    """The campaign's part of RELIABILITY.md: with `delta`, its own section (DELTA_HEADING)."""
    planned = planned or len(outcomes)
    kinds = collections.Counter(o.kind for o in outcomes)
    statuses = collections.Counter(o.status for o in outcomes)
    aimed = collections.Counter(p.bucket for o in outcomes for p in o.run.points)
    landed = collections.Counter(bucket(cut) for o in outcomes for cut in o.cut)
    reached = sum(len(o.cut) for o in outcomes)
    missed = sum(len(o.missed) for o in outcomes)
    elsewhere = sum(o.misses for o in outcomes) - missed
    offsets = [int(cut.rsplit(" ", 1)[1]) for o in outcomes for cut in o.cut
               if cut.startswith("write at byte ")]
    devices = "one emulated device" if parallel == 1 else f"{parallel} emulated devices at once"
    downloads = collections.Counter(o.download for o in outcomes)
    lines = [
        DELTA_HEADING if delta else "# Reliability: power cuts during over-the-air updates", "",
        f"`make campaign {'DELTA=1 ' if delta else ''}N={planned} PARALLEL={parallel}` on "
        f"{datetime.date.today()}, commit `{commit}`, seed {seed}: {len(outcomes)} of "
        f"{planned} runs done in {seconds / 60:.0f} min on {devices}.", "",
        f"{devices.capitalize()} (QEMU TCG, real U-Boot, A/B slots; each its own disk overlay, "
        "server and ports) run `tern-updater daemon` against `tern-server` (HTTPS, SQLite). "
        "Each run deploys a release and kills QEMU when the updater announces the chosen "
        "point on the console (a state, or a 10 % step of the rootfs write) plus a random "
        "delay (0–0.05 s; 0–1 s for the write), powers it on, waits for the server's final "
        "status and checks the device (`testkit/campaign.py`). The points are weighted "
        "toward the write windows (a cut while the device only reads proves little): the "
        "slot write 8, the steps that write the boot environment (ArtifactInstall, "
        "ArtifactCommit, ArtifactRollback) 3 each, every other state (cut just after its "
        "state store write) 1. Rollback states are cut with release-broken (never boots) "
        "and release-unhealthy (fails its health check) in turn, the others with "
        + ("the good releases in turn." if delta else "release-1 / release-2 in turn."), "",
        *([DELTA_ABOUT, ""] if delta else []),
        "Each cut is checked against its plan: the last marker the device printed before "
        "the power went (a state, or the slot offset the write had reached, after each "
        "1 MiB write) tells the window it landed in.", "",
        f"- runs (one cut each): {len(outcomes)}; cuts made: {reached}; **misses**: "
        f"{missed + elsewhere} ({missed} points never reached, {elsewhere} cuts that landed "
        "in another window than planned)",
        f"- cuts in the slot write: {landed['write']}"
        + (f", at slot offsets {min(offsets) / 2**20:.0f}–{max(offsets) / 2**20:.0f} MiB"
           if offsets else ""),
        f"- **bricks** (no shell): {kinds['brick']}",
        f"- **inconsistent reports** (status, inventory or boot environment against the "
        f"running release): {kinds['inconsistent']}",
        f"- **lost data** (/data files written before the run): {kinds['lost-data']}",
        f"- **failed updates** (a good release cut only where the update goes on: the "
        f"download, the write, the install, after the commit): {kinds['failed-update']}",
        *([f"- **adaptive installs** (the deployment log's download stats): "
           f"{downloads['adaptive']} of {len(outcomes)} runs; full installs (a fallback "
           f"inside the install): {downloads['full']}; no download stats: {downloads['']}; "
           f"**not adaptive** (counted only when nothing worse): {kinds['not-adaptive']}"]
          if delta else []),
        f"- ok: {kinds['ok']}; final statuses: "
        + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())), "",
        "| window | planned | cuts landed | ok | success | failure |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in [*STATES, "write"]:
        these = [o for o in outcomes if any(bucket(c) == name for c in o.cut)]
        lines.append(f"| {name} | {aimed[name]} | {landed[name]} | "
                     f"{sum(o.kind == 'ok' for o in these)} | "
                     f"{sum(o.status == 'success' for o in these)} | "
                     f"{sum(o.status == 'failure' for o in these)} |")
    failures = [o for o in outcomes if o.kind != "ok"]
    lines += ["", "### Failures" if delta else "## Failures", ""]
    lines += [f"- {o.release}, cut at {', '.join(o.cut)}: **{o.kind}**: "
              f"{'; '.join(o.problems)} (console: `{o.log}`)" for o in failures] or ["None."]
    return "\n".join(lines) + "\n"


CAMPAIGN_HEADINGS = ("## Failures",)
DELTA_HEADING = "## Power cuts during delta (adaptive) installs"
DELTA_ABOUT = (
    "`--delta`: every release is deployed as a block-indexed artifact, so the agent installs "
    "it adaptively: each block of the inactive slot from the slot itself, the active slot, "
    "or the server by HTTP Range. The good releases are release-1, release-1-package (one "
    "Debian package newer: 5.6 MB of shared objects) and release-1-config (one "
    "configuration file changed) of `make delta-images`, in turn: the target slot holds "
    "the release before last, so each good update writes the blocks that differ (with two "
    "in turn, the way back would find every block in place). The write's 10 % steps are "
    "of the bytes that install writes, not of the slot. Each run is also checked to have "
    "gone adaptive, by the last download stats line of its deployment log (what the "
    "server shows as the device's download): a fallback to the full install is counted "
    "as not-adaptive, not as a delta.")


def replacing_delta_section(report: str, previous: str) -> str:
    """RELIABILITY.md with the delta campaign's section (`report`) in place of its previous
    version, or added at the end; every other section kept."""
    if DELTA_HEADING not in previous:
        return previous.rstrip("\n") + "\n\n" + report if previous else report
    before, after = previous.split(DELTA_HEADING, 1)
    rest = after.split("\n## ", 1)
    return before + report + ("\n## " + rest[1] if len(rest) > 1 else "")


def keeping_other_sections(report: str, previous: str) -> str:
    """`report` in place of the campaign's part of RELIABILITY.md (its title, counts and
    `## Failures`), followed by the sections other results wrote there (the watchdog's)."""
    lines = previous.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.startswith("## ") and line.rstrip() not in CAMPAIGN_HEADINGS:
            return report + "\n" + "".join(lines[number:])
    return report


class Parallel:
    """The runs of one plan shared among devices: each worker takes the next run, until
    the plan is done, the time is up or a device bricked."""

    def __init__(self, runs: list[Run], stop_at: float):
        self.runs = collections.deque(runs)
        self.stop_at = stop_at
        self.outcomes: list[Outcome] = []
        self.stopped = ""
        self.lock = threading.Lock()

    def next_run(self) -> Run | None:
        with self.lock:
            if self.stopped or not self.runs:
                return None
            if time.monotonic() > self.stop_at:
                self.stopped = "time is up"
                return None
            return self.runs.popleft()

    def done(self, outcome: Outcome) -> int:
        with self.lock:
            self.outcomes.append(outcome)
            if outcome.kind == "brick":
                self.stopped = f"{outcome.device} bricked"
            return len(self.outcomes)


def enrolled(name: str, args, work: Path) -> tuple[LiveServer, Device, Campaign]:
    """A device with its own overlay, server and ports, enrolled; closed if that fails."""
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    live = LiveServer(work / f"{name}-server", names=("10.0.2.2",))
    live.output = out / "server.log"
    shutil.rmtree(live.data_dir, ignore_errors=True)
    device = Device(name, make_overlay(args.images / "disk.img", work / f"{name}.qcow2"),
                    out / "console.log", ssh_key=args.images / "keys" / "ssh_ed25519",
                    boot_timeout=BOOT_TIMEOUT)
    try:
        live.start(timeout=BOOT_TIMEOUT)
        campaign = Campaign(ServerAdmin(live), device, args.images, out, args.indexed)
        campaign.enroll()
    except BaseException:
        device.close()
        live.stop()
        raise
    return live, device, campaign


def worker(name: str, shared: Parallel, args, work: Path, report) -> None:
    """One device running runs from `shared`. Its enrolment is tried again from scratch
    (a new overlay and server) when a step of it times out: on a loaded host a command,
    or the daemon's first start, can take longer than its deadline."""
    for attempt in range(1, ENROL_ATTEMPTS + 1):
        try:
            live, device, campaign = enrolled(name, args, work)
            break
        except (pexpect.TIMEOUT, pexpect.EOF, DeviceError, AssertionError,
                RuntimeError) as error:
            print(f"{name}: enrolment {attempt} failed: {type(error).__name__}: {error}",
                  flush=True)
            if attempt == ENROL_ATTEMPTS:
                raise
    print(f"{name}: enrolled", flush=True)
    try:
        while (run := shared.next_run()) is not None:
            outcome = campaign.run(run)
            number = shared.done(outcome)
            print(f"[{number}/{args.cuts}] {name} {outcome.release:17} aimed at "
                  f"{run.points[0].label:28} cut at {', '.join(outcome.cut) or '-':28} "
                  f"-> {outcome.status:8} {outcome.kind:12} slot {outcome.slot} "
                  f"{outcome.running} {outcome.download or '-':8} {outcome.seconds:4.0f} s "
                  f"{'; '.join(outcome.problems + [f'missed {m}' for m in outcome.missed])}",
                  flush=True)
            report()
    except Exception as error:  # a device the campaign cannot drive: the others go on
        print(f"{name}: stopped: {type(error).__name__}: {error}", flush=True)
        raise
    finally:
        device.close()
        live.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.campaign", description=__doc__)
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=2,
                        help="devices at once, each with its own overlay, server and ports")
    parser.add_argument("--minutes", type=float, default=None,
                        help="start no run after this many minutes (the report says how "
                             "many of the cuts were done)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--delta", action="store_true",
                        help="deploy block-indexed artifacts (make delta-images), each install "
                             "checked to go adaptive; RELIABILITY.md's delta section")
    parser.add_argument("--images", type=Path, default=Path("build/images"))
    parser.add_argument("--out", type=Path, default=Path("build/campaign"))
    parser.add_argument("--report", type=Path, default=Path("RELIABILITY.md"))
    args = parser.parse_args(argv)
    previous = args.report.read_text() if args.report.exists() else ""
    seed = args.seed if args.seed is not None else time.time_ns() % 1_000_000
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="tern-campaign-"))
    started = time.monotonic()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    stop_at = started + args.minutes * 60 if args.minutes is not None else float("inf")
    shared = Parallel(weighted_cuts(args.cuts, random.Random(seed)), stop_at)
    args.indexed = None
    into = replacing_delta_section if args.delta else keeping_other_sections

    def report() -> None:  # after each run: a partial one counts
        with shared.lock:
            text = reliability_report(list(shared.outcomes), commit, seed,
                                      time.monotonic() - started, args.cuts, args.parallel,
                                      args.delta)
            args.report.write_text(into(text, previous))

    print(f"seed {seed}; {args.cuts} {'delta ' if args.delta else ''}cuts on "
          f"{args.parallel} devices", flush=True)
    threads = [threading.Thread(target=worker, args=(f"device-{number}", shared, args, work,
                                                     report), name=f"device-{number}")
               for number in range(1, args.parallel + 1)]
    try:
        if args.delta:  # before any device: they share them
            args.indexed = indexed_artifacts(args.images, work / "indexed")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if shared.stopped:
        print(f"stopped: {shared.stopped}", flush=True)
    report()
    print(f"wrote {args.report}: {len(shared.outcomes)} of {args.cuts} runs", flush=True)
    bad = [o for o in shared.outcomes if o.kind != "ok"]
    unfinished = len(shared.outcomes) < args.cuts and shared.stopped != "time is up"
    return 1 if bad or unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
