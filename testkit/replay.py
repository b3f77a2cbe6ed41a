"""Flush-point replay of whole updates on the emulated device (`make replay`).

Each scenario is recorded once with every disk write logged (QEMU's blklogwrites, see
`qemu/replay.py`), from release-1's first boot to the end of the update:

- `install`: `tern-updater install --auto-reboot` of release-2 from release-1 (the
  artifact over HTTP), the reboot, the commit by the boot's `resume`;
- `rollback`: the same with release-broken (its kernel panics; U-Boot's bootcount rolls
  back to slot A and `resume` records the failure);
- `daemon`: `tern-updater daemon` enrolled on a live `tern-server` (HTTPS), a deployment of
  release-2 to it, up to the server's `success`;
- `delta` (not in the default scenarios: it needs `make delta-images`): the `install` of
  release-1-package's block-indexed artifact (release-1 with one package newer), served
  with HTTP Range, so the install is adaptive (only the blocks the slots lack); the
  recording fails unless the install's download stats say adaptive.

Then `qemu.replay` boots one state of each group of byte-identical crash states (every
flush point, and seeded partial epochs between them) and checks it. A state cut during the
download resumes it from where the recorded update downloaded: the standalone scenarios'
artifact is served on a fixed port (`ARTIFACT_PORTS`) while the states boot, and each daemon
state gets the recorded server as it stood when the deployment was created (a snapshot of
its data directory), on its fixed port, one state at a time.

`python -m testkit.replay --workdir DIR` (make replay) is resumable: DIR keeps each
scenario's recording (the write log and the base disk, with the digests of the image files
it was made with) and `results.jsonl`, a line per booted group, appended and fsynced after
each boot. Run again, it boots only the groups without a result, on `--parallel` devices,
starting none after `--minutes`; a recording made with other images is refused unless
`--fresh-recording`. `--report` prints where the replay stands; each run writes the
section of RELIABILITY.md.
"""
import argparse
import contextlib
import datetime
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qemu.device import Device, make_overlay
from qemu.replay import (
    Boot,
    CrashState,
    Expectations,
    Recording,
    Verdict,
    apply_extents,
    boot_all,
    describe,
    extents,
    plan,
    read_log,
    sample_groups,
    settle,
)
from testkit.http_files import serve_directory
from testkit.range_files import RangeFileServer

SCENARIOS = ("install", "rollback", "daemon")  # the default ones (make replay)
ALL_SCENARIOS = (*SCENARIOS, "delta")
DELTA_RELEASE = "release-1-package"  # make delta-images: release-1 with one package newer
RELEASES = {"install": "release-2", "rollback": "release-broken", "delta": DELTA_RELEASE}
# Fixed loopback ports (below Linux's ephemeral ports, which free_port draws) for what a
# recorded update downloads from: its states resume the download from the same URL when
# they boot, in this run or a later one.
ARTIFACT_PORTS = {"install": 28301, "rollback": 28302, "delta": 28303}
SERVER_PORT = 28304  # the daemon scenario's tern-server
SERVER_SNAPSHOT = "server"  # in the daemon recording's directory
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
                     expect: Expectations, made_with: dict | None = None) -> Recording:
    """Sync, power off; the base disk for the states is the image with the log's first
    `start` entries written (release-1 booted, the file on /data). `made_with`: the
    image's digests (`made_with`), stored with a new id for this recording."""
    device.run_check("sync")
    device.close()
    base = work / "base.raw"
    subprocess.run(["cp", "--sparse=always", str(images / "disk.img"), str(base)], check=True)
    log = read_log(device.write_log)
    apply_extents(log, extents(log, CrashState("start", "flush", start)), base)
    recording = Recording(work, base, device.write_log, start, expect, scenario,
                          {**(made_with or {}), "id": uuid.uuid4().hex[:12]})
    recording.save()
    return recording


class NotAdaptive(AssertionError):
    """A delta recording whose install did not go adaptive: a full install recorded as a
    delta would prove nothing about the adaptive one."""


STATS = re.compile(r"download stats (\{[^{}\r\n]*\})")
FALLBACK = re.compile(r"adaptive install: ([^\r\n]*); downloading the full artifact")


def adaptive_stats(output: str) -> dict:
    """The download stats of an install whose console output (the updater's stderr lines)
    is `output`, when its last says adaptive; else NotAdaptive, with the stats and the
    reason of the fallback the updater gave."""
    stats = [json.loads(found) for found in STATS.findall(output)]
    if stats and stats[-1].get("mode") == "adaptive":
        return stats[-1]
    fallbacks = FALLBACK.findall(output)
    raise NotAdaptive("the delta install was not adaptive: download stats "
                      + (json.dumps(stats[-1]) if stats else "none")
                      + (f" (adaptive install: {fallbacks[-1]})" if fallbacks else ""))


def record_standalone(images: Path, work: Path, release: str, url: str, scenario: str,
                      made_with: dict | None = None, artifact_url: str = "",
                      adaptive: bool = False) -> Recording:
    """release-1 -> `release` with `tern-updater install --auto-reboot URL` (`artifact_url`,
    else `release` from `url`); with `adaptive`, the install must go adaptive (its download
    stats are kept with the recording's `made_with`)."""
    artifact_url = artifact_url or f"{url}/{release}.mender"
    device = start_recording(images, work)
    try:
        wait_resumed(device, CONFIG)
        device.run_check(f"until wget -q -O /dev/null {url}/layout.json; do sleep 1; done",
                         timeout=120)  # udhcpc has its lease
        files = put_before_update(device)
        start = update_begins(device)
        device.console.sendline(f"tern-updater --config {CONFIG} install --auto-reboot "
                                f"{artifact_url}; echo \"install exit $?\"")
        device.console.expect(r"install exit (\d+)", time.monotonic() + 900)
        output = device.console.pexpect.before
        if device.console.match.group(1) != "0":
            raise AssertionError(f"install of {release} exited {device.console.match.group(1)}")
        if adaptive:
            made_with = {**(made_with or {}), "download": adaptive_stats(output)}
        device.expect_reboot(timeout=300)
        status = wait_resumed(device, CONFIG)
        expected = "release-1" if release == "release-broken" else release
        if status["artifact_name"] != expected:
            raise AssertionError(f"the recorded update ended on {status['artifact_name']}")
        releases = ("release-1",) if expected == "release-1" else ("release-1", release)
        return finish_recording(device, images, work, scenario, start,
                                Expectations(releases, files, CONFIG), made_with)
    finally:
        device.close()


def record_daemon(images: Path, work: Path, admin, made_with: dict | None = None) -> Recording:
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
        snapshot_server(admin.live.data_dir, work / SERVER_SNAPSHOT)
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
                                             DAEMON_CONFIG, deployed="release-2"),
                                {**(made_with or {}), "server": {
                                    "snapshot": SERVER_SNAPSHOT, "port": admin.live.port}})
    finally:
        device.close()


def snapshot_server(data_dir: Path, snapshot: Path) -> None:
    """The server's data directory as it stands; its SQLite database by SQLite's backup
    (consistent while the server writes)."""
    shutil.copytree(data_dir, snapshot, ignore=shutil.ignore_patterns("tern.db*"))
    with contextlib.closing(sqlite3.connect(data_dir / "tern.db")) as source, \
            contextlib.closing(sqlite3.connect(snapshot / "tern.db")) as copy:
        source.backup(copy)


@contextlib.contextmanager
def server_from(snapshot: Path, port: int):
    """A copy of the recorded server's snapshot served on its port for one state's boot:
    each state resumes the deployment as it began (a server another state had reported
    to would refuse its reports: the deployment finished)."""
    from testkit.live_server import LiveServer

    with tempfile.TemporaryDirectory(prefix="tern-replay-server-") as scratch:
        shutil.copytree(snapshot, Path(scratch) / "server")
        with LiveServer(Path(scratch) / "server", names=("10.0.2.2",), port=port) as live:
            yield live


def served(recording: Recording, images: Path, stack: contextlib.ExitStack) -> dict:
    """What the recording's states download from, up while they boot: its artifact's
    server, started now for the whole run; or the server snapshot's, per boot (the Boots'
    `around`, one at a time: `exclusive`, the port)."""
    made_with = recording.made_with
    if "artifact" in made_with:
        artifact = made_with["artifact"]
        stack.enter_context(RangeFileServer(images / artifact["file"], artifact["port"]))
    if "server" in made_with:
        server = made_with["server"]
        return {"around": functools.partial(server_from, recording.directory /
                                            server["snapshot"], server["port"]),
                "exclusive": f"port {server['port']}"}
    return {}


def interleaved(per_scenario: list[list[Boot]]) -> list[Boot]:
    """One job of each scenario in turn (the daemon's boot one at a time: beside one, a
    device takes the other scenarios' jobs)."""
    jobs = [job for turn in itertools.zip_longest(*per_scenario) for job in turn]
    return [job for job in jobs if job is not None]



# -- what a recording was made with ------------------------------------------------------

IMAGE_FILES = ("disk.img", "layout.json", "release-1.mender", "release-2.mender",
               "release-broken.mender")  # every scenario's
SCENARIO_FILES = {"delta": (f"{DELTA_RELEASE}.mender",)}  # make delta-images


class StaleRecording(Exception):
    """A kept recording was made with other images than the ones given."""


class MissingImage(Exception):
    """An image file a scenario needs was not built."""


def image_files(scenario: str) -> tuple[str, ...]:
    """The image files a scenario's recording depends on (the disk it boots, the releases
    it installs and updates to)."""
    return IMAGE_FILES + SCENARIO_FILES.get(scenario, ())


def image_digests(images: Path, names: tuple[str, ...] = IMAGE_FILES) -> dict[str, str]:
    """The sha256 of the image files `names`."""
    digests = {}
    for name in names:
        try:
            with open(images / name, "rb") as file:
                digests[name] = hashlib.file_digest(file, "sha256").hexdigest()
        except FileNotFoundError:
            build = "image" if name in IMAGE_FILES else "delta-images"
            raise MissingImage(f"no {images / name}: run `make {build}`") from None
    return digests


def kept_recording(directory: Path, images: dict[str, str]) -> Recording | None:
    """The recording in `directory` when it is complete and was made with `images` (the
    digests); None when there is none (a directory a cut recording left is removed)."""
    if not (directory / "recording.json").exists():
        shutil.rmtree(directory, ignore_errors=True)
        return None
    recording = Recording.load(directory)
    made_with = recording.made_with
    if "images" not in made_with or "id" not in made_with:
        raise StaleRecording(f"{directory}: recorded by an older testkit.replay (no image "
                             "digests); run again with --fresh-recording to record it again")
    changed = sorted(name for name in images if made_with["images"].get(name) != images[name])
    if changed:
        raise StaleRecording(f"{directory}: recorded at commit {made_with.get('commit')} with "
                             f"other images ({', '.join(changed)} changed); run again with "
                             "--fresh-recording to record it again (its results stop counting)")
    if not recording.base.exists() or not recording.log.exists():
        raise StaleRecording(f"{directory}: its base disk or write log is gone; run again "
                             "with --fresh-recording to record it again")
    return recording


# -- results ---------------------------------------------------------------------------------

RESULTS = "results.jsonl"


@dataclass(frozen=True)
class Result:
    """A booted group: a line of the results file. `recording`: the id of the recording
    its states come from (digests compare only within one recording: its base disk)."""

    scenario: str
    recording: str
    group: str  # Group.digest
    state: str  # the state booted: the group's first
    stands_for: int  # states in the group
    ok: bool
    problems: list[str]
    seconds: float
    commit: str
    slot: str = ""
    release: str = ""
    updated_to: str = ""
    finished: str = ""  # ISO 8601, UTC

    @classmethod
    def of(cls, job: Boot, verdict: Verdict, commit: str) -> "Result":
        recording = job.recording
        return cls(recording.scenario, recording.made_with["id"], job.group.digest,
                   job.group.representative.label, len(job.group.states), verdict.ok,
                   list(verdict.problems), round(verdict.seconds, 1), commit, verdict.slot,
                   verdict.release, verdict.updated_to,
                   datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))


class Results:
    """The results file: JSON lines, each appended and fsynced once its boot is over, so
    a stop (Ctrl-C, a power cut of the host) loses at most the boots under way."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[Result]:
        """Every complete line; one a cut left torn is ignored (its group boots again)."""
        if not self.path.exists():
            return []
        results = []
        for line in self.path.read_text().splitlines():
            try:
                results.append(Result(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return results

    def append(self, result: Result) -> None:
        line = json.dumps(asdict(result)).encode() + b"\n"
        with open(self.path, "a+b") as file:
            if file.seek(0, os.SEEK_END) > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":  # a line a cut left torn: end it first
                    line = b"\n" + line
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def latest(self, scenario: str, recording: str) -> dict[str, Result]:
        """The last result of each group of one recording, by group digest."""
        return {r.group: r for r in self.read()
                if r.scenario == scenario and r.recording == recording}


def to_boot(groups: list, latest: dict[str, Result], retry_failed: bool = False) -> list:
    """The groups without a result yet (and those whose last boot failed, to retry)."""
    return [g for g in groups
            if g.digest not in latest or (retry_failed and not latest[g.digest].ok)]


# -- plans and the report ----------------------------------------------------------------

@dataclass
class Plan:
    """A scenario's crash states as the report counts them, kept in its recording's
    directory (plan-<seed>-<samples>.json: planning reads the whole log)."""

    scenario: str
    entries: int
    flush_points: int
    states: int
    groups: list[str]  # the digests of the distinct states, in log order
    stands_for: list[int] = field(default_factory=list)  # states per group

    @staticmethod
    def path(directory: Path, seed: int, samples: int) -> Path:
        return directory / f"plan-{seed}-{samples}.json"

    def save(self, directory: Path, seed: int, samples: int) -> None:
        self.path(directory, seed, samples).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, directory: Path, seed: int, samples: int) -> "Plan | None":
        path = cls.path(directory, seed, samples)
        return cls(**json.loads(path.read_text())) if path.exists() else None


def planned(recording: Recording, layout: dict, images: Path, seed: int,
            samples: int) -> tuple:
    """(log, groups, Plan) of a recording; the Plan saved beside it."""
    log, states, groups = plan(recording, layout, images, seed, samples)
    summary = Plan(recording.scenario, len(log.writes) - recording.start,
                   sum(state.kind == "flush" for state in states), len(states),
                   [g.digest for g in groups], [len(g.states) for g in groups])
    summary.save(recording.directory, seed, samples)
    return log, groups, summary


@dataclass
class Row:
    """A scenario's line of the table; `plan` None: not recorded (or planned) yet."""

    scenario: str
    plan: Plan | None = None
    results: dict[str, Result] = field(default_factory=dict)  # of the plan's groups

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results.values() if not r.ok]

    @property
    def still_to_boot(self) -> int:
        return len(self.plan.groups) - len(self.results) if self.plan else 0


def rows(workdir: Path, scenarios: list[str], seed: int, samples: int,
         layout: dict | None = None, images: Path | None = None) -> list[Row]:
    """Each scenario's plan and the latest result of each of its groups. A recording not
    planned for this seed yet is planned when `layout` is given, else left out (as one
    an older testkit.replay made)."""
    results = Results(workdir / RESULTS)
    table = []
    for scenario in scenarios:
        directory = workdir / scenario
        if not (directory / "recording.json").exists():
            table.append(Row(scenario))
            continue
        recording = Recording.load(directory)
        if "id" not in recording.made_with:  # an older testkit.replay's: a run refuses it
            table.append(Row(scenario))
            continue
        summary = Plan.load(directory, seed, samples)
        if summary is None and layout is not None:
            summary = planned(recording, layout, images, seed, samples)[2]
        latest = results.latest(scenario, recording.made_with.get("id", ""))
        mine = set(summary.groups) if summary else set()
        table.append(Row(scenario, summary, {g: r for g, r in latest.items() if g in mine}))
    return table


def reported(workdir: Path, asked: list[str]) -> list[str]:
    """The scenarios of the table: those asked and those recorded in `workdir` before (a
    run of one scenario keeps the others' rows)."""
    return [scenario for scenario in ALL_SCENARIOS
            if scenario in asked or (workdir / scenario / "recording.json").exists()]


def table(table_rows: list[Row]) -> list[str]:
    lines = ["| scenario | log entries | flush points | sampled states | distinct states | "
             "booted | failures | fresh updates | still to boot |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table_rows:
        if row.plan is None:
            lines.append(f"| {row.scenario} | not recorded yet | | | | | | | |")
            continue
        plan_ = row.plan
        fresh = sum(bool(r.updated_to) for r in row.results.values())
        lines.append(f"| {row.scenario} | {plan_.entries} | {plan_.flush_points} | "
                     f"{plan_.states} | {len(plan_.groups)} | {len(row.results)} | "
                     f"{len(row.failures)} | {fresh} | {row.still_to_boot} |")
    return lines


def failure_lines(table_rows: list[Row], workdir: Path) -> list[str]:
    failures = [r for row in table_rows for r in row.failures]
    if not failures:
        return ["Failures: none."]
    return ["Failures:"] + [
        f"- {r.scenario}, {r.state} (group {r.group}, stands for {r.stands_for}; commit "
        f"{r.commit}): {'; '.join(r.problems)} (console: "
        f"`{workdir / r.scenario / f'state-{r.group}.log'}`)" for r in failures]


HEADING = "## Power cuts that lose what real storage loses: flush-point replay"
DELTA_ABOUT = (
    "The `delta` scenario (`make replay SCENARIOS=delta`, after `make delta-images`; not in "
    "the default ones) records the adaptive install of release-1-package's block-indexed "
    "artifact (release-1 with one package newer) on release-1, served with HTTP Range: only "
    "the blocks the slots lack are written; its states may boot release-1 or "
    "release-1-package. The recording is refused unless the install's download stats say "
    "adaptive (a fallback to the full install is not a delta).")


def section(table_rows: list[Row], workdir: Path, seed: int, samples: int) -> str:
    """RELIABILITY.md's section, from the plans and the results file (every run so far)."""
    results = [r for row in table_rows for r in row.results.values()]
    commits = sorted({r.commit for r in results})
    dates = sorted(r.finished[:10] for r in results)
    hours = sum(r.seconds for r in results) / 3600
    ran = (f"{len(results)} boots from {dates[0]} to {dates[-1]} ({hours:.1f} h of device "
           f"time), commit{'s' if len(commits) > 1 else ''} "
           f"{', '.join(f'`{c}`' for c in commits)}" if results else "no boot yet")
    still = sum(row.still_to_boot for row in table_rows)
    unrecorded = [row.scenario for row in table_rows if row.plan is None]
    lines = [
        HEADING, "",
        f"`make replay` (`python -m testkit.replay --workdir {workdir} --seed {seed} "
        f"--samples {samples}`): {ran}.", "",
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
        "update (`tern-updater install` of the other release, reboot, commit; a daemon "
        "state: its server's deployment carried out from there). A state cut in the "
        "download resumes it from what the recording downloaded from: the artifact served "
        "on the recorded port, or for a daemon state a copy of its server as it stood when "
        "the deployment was created.", "",
        DELTA_ABOUT, "",
        "A boot costs 30–100 s under emulation, so the replay is resumable: `make replay` "
        "keeps the recordings and a line per booted group in `build/replay` and boots only "
        "the groups without a result, on `PARALLEL` devices at once (2 by default), "
        "starting none after `MINUTES` when given (`make replay MINUTES=120`); "
        "`make replay-report` prints this table from the results so far. A recording made "
        "with other images is refused until `make replay FRESH=1` records it again.", "",
        *table(table_rows), "",
    ]
    if unrecorded or still:
        lines += [f"Still to boot: {still} distinct states"
                  + (f"; not recorded yet: {', '.join(unrecorded)}" if unrecorded else "")
                  + " (`make replay` continues).", ""]
    lines += failure_lines(table_rows, workdir)
    return "\n".join(lines) + "\n"


def replacing_section(text: str, previous: str) -> str:
    """RELIABILITY.md with this section in place of its previous version (or added)."""
    if HEADING not in previous:
        return (previous.rstrip("\n") + "\n\n" if previous.strip() else "") + text
    before, after = previous.split(HEADING, 1)
    rest = after.split("\n## ", 1)
    return before + text + ("\n## " + rest[1] if len(rest) > 1 else "")


# -- a run -----------------------------------------------------------------------------------

@contextlib.contextmanager
def recording_server(images: Path):
    """A live tern-server on SERVER_PORT with release-2 uploaded: its ServerAdmin."""
    from testkit.admin import ServerAdmin
    from testkit.live_server import LiveServer

    with tempfile.TemporaryDirectory(prefix="tern-replay-") as scratch, \
            LiveServer(Path(scratch) / "server", names=("10.0.2.2",), port=SERVER_PORT) as live:
        admin = ServerAdmin(live)
        admin.cli("artifacts", "upload", str(images / "release-2.mender"))
        yield admin


def record(scenario: str, images: Path, directory: Path, url: str,
           made_with: dict) -> Recording:
    shutil.rmtree(directory, ignore_errors=True)
    if scenario == "daemon":
        with recording_server(images) as admin:
            return record_daemon(images, directory, admin, made_with)
    artifact = {"file": f"{RELEASES[scenario]}.mender", "port": ARTIFACT_PORTS[scenario]}
    with RangeFileServer(images / artifact["file"], artifact["port"]) as server:
        return record_standalone(images, directory, RELEASES[scenario], url, scenario,
                                 {**made_with, "artifact": artifact}, server.guest_url,
                                 adaptive=scenario == "delta")


def run(args, commit: str) -> int:
    """Record what is missing, then boot the groups without a result."""
    stop_at = time.monotonic() + args.minutes * 60 if args.minutes is not None else math.inf
    args.workdir.mkdir(parents=True, exist_ok=True)
    made_with = {scenario: {"commit": commit,
                            "images": image_digests(args.images, image_files(scenario))}
                 for scenario in args.scenarios}  # refuses a missing image before any work
    recordings = {scenario: None if args.fresh_recording else
                  kept_recording(args.workdir / scenario, made_with[scenario]["images"])
                  for scenario in args.scenarios}  # refuses a stale one before any work
    layout = json.loads((args.images / "layout.json").read_text())
    results = Results(args.workdir / RESULTS)
    per_scenario: list[list[Boot]] = []
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_directory(args.images))
        for scenario in args.scenarios:
            if recordings[scenario] is None:
                if time.monotonic() > stop_at:
                    print(f"{scenario}: not recorded, the time is up", flush=True)
                    continue
                print(f"{scenario}: recording", flush=True)
                recordings[scenario] = record(scenario, args.images, args.workdir / scenario,
                                              url, made_with[scenario])
            recording = recordings[scenario]
            log, groups, summary = planned(recording, layout, args.images, args.seed,
                                           args.samples)
            latest = results.latest(scenario, recording.made_with["id"])
            chosen = to_boot(sample_groups(groups, args.limit, args.seed), latest,
                             args.retry_failed)
            fresh = max(0, args.fresh_updates - sum(bool(r.updated_to)
                                                    for r in latest.values()))
            serving = served(recording, args.images, stack)
            per_scenario.append([Boot(recording, log, group, number < fresh, **serving)
                                 for number, group in enumerate(chosen)])
            print(f"{scenario}: {summary.entries} log entries, {summary.flush_points} flush "
                  f"points, {summary.states} states, {len(groups)} distinct, "
                  f"{len(latest)} booted before; booting {len(chosen)}", flush=True)

        jobs = interleaved(per_scenario)
        booted: list[Result] = []

        def done(job: Boot, verdict: Verdict) -> None:
            booted.append(Result.of(job, verdict, commit))
            results.append(booted[-1])
            print(f"[{len(booted)}/{len(jobs)}] {describe(job, verdict)}", flush=True)

        urls = {name: f"{url}/{name}.mender" for name in ("release-1", "release-2")}
        try:
            boot_all(jobs, args.images, args.parallel, stop_at, urls, done)
        finally:
            table_rows = rows(args.workdir, reported(args.workdir, args.scenarios),
                              args.seed, args.samples)
            previous = args.reliability.read_text() if args.reliability.exists() else ""
            args.reliability.write_text(replacing_section(
                section(table_rows, args.workdir, args.seed, args.samples), previous))
    print("\n".join(table(table_rows)), flush=True)
    print(f"wrote {args.reliability}; {len(booted)} of {len(jobs)} booted in this run",
          flush=True)
    return 1 if any(row.failures for row in table_rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("build/replay"),
                        help="the recordings and the results file, kept across runs")
    parser.add_argument("--scenarios", nargs="+", choices=ALL_SCENARIOS,
                        default=list(SCENARIOS),
                        help="delta needs `make delta-images` (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None,
                        help="boot at most this many distinct states per scenario (a seeded "
                             "draw, the same in every run)")
    parser.add_argument("--fresh-updates", type=int, default=2,
                        help="from this many booted states per scenario, also a fresh update "
                             "(a daemon state: the server's deployment carried out)")
    parser.add_argument("--parallel", type=int, default=2, help="devices booting at once")
    parser.add_argument("--minutes", type=float, default=None,
                        help="start no boot (nor recording) after this many minutes; the "
                             "next run continues")
    parser.add_argument("--fresh-recording", action="store_true",
                        help="record the scenarios again (their results stop counting)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="boot again the groups whose last boot failed")
    parser.add_argument("--report", action="store_true",
                        help="print the table from the results so far, boot nothing")
    parser.add_argument("--images", type=Path, default=Path("build/images"))
    parser.add_argument("--reliability", type=Path, default=Path("RELIABILITY.md"),
                        help="the file whose replay section each run rewrites")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    try:
        if args.report:
            layout_path = args.images / "layout.json"
            layout = json.loads(layout_path.read_text()) if layout_path.exists() else None
            table_rows = rows(args.workdir, reported(args.workdir, args.scenarios), args.seed,
                              args.samples, layout, args.images)
            print("\n".join([*table(table_rows), "", *failure_lines(table_rows,
                                                                     args.workdir)]))
            return 0
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        return run(args, commit)
    except (StaleRecording, MissingImage, OSError) as error:
        print(f"testkit.replay: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
