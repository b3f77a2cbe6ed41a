"""Crash states from a write log: the disk as a power cut could leave it, booted and checked.

QEMU's `blklogwrites` block driver logs every write the guest makes to its disk, in the
Linux dm-log-writes format (`record_command_args`): a superblock in sector 0, then per
write a sector-sized header (sector, sector count, flags, data length: little-endian
u64) and the written sectors; a flush is an entry with the FLUSH flag and no data.
QEMU rewrites the superblock's entry count only at a flush, so the entries are read up to
the end of the file, not up to that count.

Real storage keeps what was written before a flush (or with FUA) and may lose or reorder
anything written since, tearing a write at sector granularity. From a log:

- `crash_states`: the disk at every flush/FUA point, and between two points a seeded
  sample of what a volatile cache could leave (the epoch's writes all lost, a prefix of
  them, a random subset, the last write torn);
- `group_states`: states that are byte-identical in what the boot path reads (the boot
  partition with the environment copies, the slots, the data partition) share one boot;
- `write_overlay`: a state as a qcow2 overlay over the base disk (no copy of the disk);
- `check_state`: powered on unattended and checked as the power-cut campaign checks.

A write logged between a flush's submission and its completion is counted as before the
flush (QEMU logs a write when it completes): a state may keep a write a real cache could
still lose, never the other way round.
"""
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from qemu.device import UBOOT_BANNER, Device, DeviceError, make_overlay

MAGIC = 0x6A736677736872
VERSION = 1
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
SUPERBLOCK = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")
SLOT_PARTITIONS = {"A": "rootA", "B": "rootB"}


class LogError(Exception):
    """The file is not a write log QEMU's blklogwrites wrote."""


@dataclass(frozen=True)
class Write:
    """One log entry. `data_offset`: where its sectors are in the log (-1: none)."""

    index: int
    sector: int
    sectors: int
    flags: int
    data_offset: int

    @property
    def is_flush_point(self) -> bool:
        return bool(self.flags & (FLUSH | FUA))

    @property
    def has_data(self) -> bool:
        """A write (data, or zeroes) or a discard: something that changes the disk."""
        return self.sectors > 0 and not self.flags & MARK


@dataclass(frozen=True)
class WriteLog:
    path: Path
    sector_size: int
    writes: list[Write]
    counted: int  # the superblock's entry count (as of the last flush)


def read_log(path: Path) -> WriteLog:
    """Every complete entry of a blklogwrites log (a torn last one is left out)."""
    path = Path(path)
    with open(path, "rb") as log:
        header = log.read(SUPERBLOCK.size)
        if len(header) < SUPERBLOCK.size:
            raise LogError(f"{path}: no superblock (the log is empty: did the guest flush?)")
        magic, version, counted, sector_size = SUPERBLOCK.unpack(header)
        if magic != MAGIC:
            raise LogError(f"{path}: not a dm-log-writes log (magic {magic:#x})")
        if version != VERSION:
            raise LogError(f"{path}: log version {version}, expected {VERSION}")
        if sector_size < ENTRY.size or sector_size & (sector_size - 1):
            raise LogError(f"{path}: bad sector size {sector_size}")
        size = path.stat().st_size
        writes: list[Write] = []
        position = sector_size
        while position + sector_size <= size:
            log.seek(position)
            sector, sectors, flags, _ = ENTRY.unpack(log.read(ENTRY.size))
            if flags & ~(FLUSH | FUA | DISCARD | MARK):
                raise LogError(f"{path}: entry {len(writes)} has bad flags {flags:#x}")
            data = 0 if flags & DISCARD else sectors * sector_size
            if position + sector_size + data > size:
                break  # the last entry's data never reached the log
            writes.append(Write(len(writes), sector, sectors, flags,
                                -1 if flags & DISCARD else position + sector_size))
            position += sector_size + data
    if len(writes) < counted:
        raise LogError(f"{path}: the superblock counts {counted} entries, the file has "
                       f"{len(writes)}")
    return WriteLog(path, sector_size, writes, counted)


# -- crash states ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CrashState:
    """The disk after the log's first `durable` entries, plus the writes `extra` (indices,
    in log order) of the epoch that followed, the last of them cut to `torn_sectors`
    sectors when given. `kind`: flush | lost | prefix | subset | torn | end."""

    label: str
    kind: str
    durable: int
    extra: tuple[int, ...] = ()
    torn_sectors: int | None = None


def epochs(log: WriteLog, start: int = 0) -> list[tuple[int, list[int]]]:
    """(durable, writes): the entries up to a flush point (or `start`), and the writes with
    data logged after them up to the next flush point or the end of the log."""
    result = []
    durable, pending = start, []
    for write in log.writes[start:]:
        if write.flags & FUA and write.has_data:
            pending.append(write.index)
        if write.is_flush_point:
            result.append((durable, pending))
            durable, pending = write.index + 1, []
        elif write.has_data:
            pending.append(write.index)
    result.append((durable, pending))
    return result


def crash_states(log: WriteLog, start: int = 0, seed: int = 0,
                 samples: int = 1) -> list[CrashState]:
    """The disk at every flush/FUA point after entry `start` (and at the end of the log),
    and `samples` draws of each kind of partial epoch between them, seeded."""
    rng = random.Random(seed)
    states = []
    all_epochs = epochs(log, start)
    for number, (durable, pending) in enumerate(all_epochs):
        last = number == len(all_epochs) - 1
        if number:  # the first epoch starts at `start`, not at a flush point
            states.append(CrashState(f"flush point {number} (entry {durable - 1})", "flush",
                                     durable))
        if last and pending:
            states.append(CrashState(f"end of the log ({len(pending)} unflushed writes)", "end",
                                     durable, tuple(pending)))
        if not pending:
            continue
        where = f"epoch {number} ({len(pending)} writes after entry {durable - 1})"
        for _ in range(samples):
            states.append(CrashState(f"{where}: all lost", "lost", durable))
            if len(pending) > 1:
                cut = rng.randrange(1, len(pending))
                states.append(CrashState(f"{where}: first {cut}", "prefix", durable,
                                         tuple(pending[:cut])))
                kept = tuple(i for i in pending if rng.random() < 0.5)
                states.append(CrashState(f"{where}: subset of {len(kept)}", "subset", durable,
                                         kept))
            torn = [n for n, i in enumerate(pending) if log.writes[i].sectors > 1]
            if torn:
                at = rng.choice(torn)
                sectors = rng.randrange(1, log.writes[pending[at]].sectors)
                states.append(CrashState(f"{where}: first {at}, write {at + 1} torn at "
                                         f"{sectors}/{log.writes[pending[at]].sectors} sectors",
                                         "torn", durable, tuple(pending[:at + 1]), sectors))
    return states


@dataclass(frozen=True)
class Extent:
    """`length` bytes at disk `offset`, from the log at `data_offset` (-1: zeroes)."""

    offset: int
    length: int
    data_offset: int


def extents(log: WriteLog, state: CrashState) -> list[Extent]:
    """What the state wrote over the base disk, in order (a later extent wins)."""
    chosen = [w for w in log.writes[:state.durable] if w.has_data]
    chosen += [log.writes[i] for i in state.extra]
    result = []
    for number, write in enumerate(chosen):
        sectors = write.sectors
        if state.torn_sectors is not None and number == len(chosen) - 1 and state.extra:
            sectors = state.torn_sectors
        result.append(Extent(write.sector * log.sector_size, sectors * log.sector_size,
                             write.data_offset))
    return result


def apply_extents(log: WriteLog, writes: Iterable[Extent], disk: Path) -> None:
    """Write `writes` into the raw file `disk` (tests, and a base from a log's prefix)."""
    with open(log.path, "rb") as source, open(disk, "r+b") as target:
        for extent in writes:
            target.seek(extent.offset)
            target.write(_extent_data(source, extent, 0, extent.length))


def _extent_data(log, extent: Extent, start: int, end: int) -> bytes:
    if extent.data_offset < 0:
        return bytes(end - start)
    log.seek(extent.data_offset + start)
    return log.read(end - start)


# -- content and groups ----------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """A part of the disk the boot path reads."""

    name: str
    offset: int
    size: int


class Contents:
    """Digests of the disk's regions in a state, without writing the state anywhere: of
    the sectors the state's extents change from the base disk. Cached by the extents that
    touch a region, so the states of one epoch cost one read of what they share."""

    def __init__(self, log: WriteLog, base: Path, regions: list[Region]):
        self.log = log
        self.base = Path(base)
        self.regions = regions
        self._digests: dict[tuple, str] = {}

    def key(self, state: CrashState) -> tuple[tuple[str, str], ...]:
        writes = extents(self.log, state)
        return tuple((region.name, self.changes(region.offset, region.size, writes))
                     for region in self.regions)

    def changes(self, offset: int, size: int, writes: list[Extent]) -> str:
        """A digest of the sectors of the region that differ from the base (with their
        content): equal digests, byte-identical regions; it reads only what was written."""
        touching = _touching(offset, size, writes)
        key = ("changes", offset, size, touching)
        if key not in self._digests:
            final: dict[int, bytes] = {}
            sector = self.log.sector_size
            with open(self.log.path, "rb") as log:
                for extent in touching:
                    low = max(extent.offset, offset)
                    high = min(extent.offset + extent.length, offset + size)
                    data = _extent_data(log, extent, low - extent.offset, high - extent.offset)
                    for at in range(low, high, sector):
                        final[at] = data[at - low:at - low + sector]
            digest = hashlib.sha256()
            with open(self.base, "rb") as base:
                for at in sorted(final):
                    base.seek(at)
                    if base.read(sector).ljust(sector, b"\0") != final[at]:
                        digest.update(at.to_bytes(8, "little") + final[at])
            self._digests[key] = digest.hexdigest()
        return self._digests[key]


def _touching(offset: int, size: int, writes: list[Extent]) -> tuple[Extent, ...]:
    return tuple(e for e in writes if e.offset < offset + size and e.offset + e.length > offset)


@dataclass
class Group:
    """States byte-identical in the regions: one boot stands for all of them."""

    key: tuple[tuple[str, str], ...]
    states: list[CrashState]

    @property
    def representative(self) -> CrashState:
        return self.states[0]

    @property
    def digest(self) -> str:
        """The group's name across runs: a digest of its content (whatever the seed that
        drew its states), so a resumed replay knows the groups it already booted."""
        return hashlib.sha256(json.dumps(self.key).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, str]:
        """Each region's digest of changes, short ("e3b0c44298fc": none)."""
        return {name: value[:12] for name, value in self.key}


def sample_groups(groups: list[Group], limit: int | None, seed: int) -> list[Group]:
    """At most `limit` groups: first one for each content of the first region (the boot
    partition: each environment the update wrote, torn ones too), then a seeded draw of
    the others; in log order."""
    if limit is None or limit >= len(groups):
        return groups
    first: dict[str, Group] = {}
    for group in groups:
        first.setdefault(group.key[0][1], group)
    rng = random.Random(seed)
    chosen = rng.sample(list(first.values()), min(limit, len(first)))
    others = [g for g in groups if g not in chosen]
    chosen += rng.sample(others, limit - len(chosen))
    return sorted(chosen, key=groups.index)


def group_states(states: list[CrashState], contents: Contents) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for state in states:
        key = contents.key(state)
        groups.setdefault(key, Group(key, [])).states.append(state)
    return list(groups.values())


def regions_from_layout(layout: dict) -> list[Region]:
    """The boot path's regions of the image that images/build.py made (layout.json):
    the boot partition (boot script, environment copies), the slots, the data partition.
    (A slot is compared whole: a mounted ext4 root changes its superblock, so a slot is
    rarely byte for byte the release image it was written from.)"""
    return [Region(name, part["offset"], part["size"])
            for name, part in layout["partitions"].items()]


def write_overlay(log: WriteLog, state: CrashState, base: Path, overlay: Path) -> Path:
    """The state as a qcow2 overlay over the raw `base`: only its writes are copied, by
    qemu-io, contiguous ones merged (at most 64 MiB at a time)."""
    make_overlay(base, overlay)
    merged: list[list[int]] = []  # [offset, length, index of the first extent]
    writes = extents(log, state)
    for number, extent in enumerate(writes):
        if merged and merged[-1][0] + merged[-1][1] == extent.offset \
                and merged[-1][1] + extent.length <= 64 << 20:
            merged[-1][1] += extent.length
        else:
            merged.append([extent.offset, extent.length, number])
    commands = []
    with tempfile.TemporaryDirectory(prefix="tern-replay-") as scratch, \
            open(log.path, "rb") as source:
        starts = [m[2] for m in merged] + [len(writes)]
        for number, (offset, length, first) in enumerate(merged):
            data = Path(scratch) / f"{number}.bin"
            with open(data, "wb") as out:
                for extent in writes[first:starts[number + 1]]:
                    out.write(_extent_data(source, extent, 0, extent.length))
            commands.append(f"write -q -s {data} {offset} {length}")
        commands.append("quit")
        subprocess.run(["qemu-io", "-f", "qcow2", str(overlay)], input="\n".join(commands),
                       text=True, check=True, capture_output=True)
    return overlay


# -- booting a state -------------------------------------------------------------------------

@dataclass(frozen=True)
class Expectations:
    """What a crash state of one update may boot into. `releases`: the old release and
    the new one (the one the update installs, when it is good); `files`: /data files
    written before the update, with their sha256; `deployed`: the release a server
    deploys to the state's daemon, which then updates by itself (its fresh update)."""

    releases: tuple[str, ...]
    files: dict[str, str]
    config: str = "/etc/tern/updater.toml"
    deployed: str = ""


@dataclass
class Verdict:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    slot: str = ""
    release: str = ""
    seconds: float = 0.0
    updated_to: str = ""  # the release a fresh update installed, when one was tried

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)


RESUME_RUNNING = "ps | grep -v grep | grep -q 'tern-updater.* resume'"  # busybox: no pgrep


def check_state(device: Device, expect: Expectations, boot_timeout: float = 240,
                resume_timeout: float = 300) -> Verdict:
    """Power the device on (no key pressed in U-Boot) and check it as the campaign checks:
    a shell within `boot_timeout`; once the boot's `resume` is over, no trial pending, the
    environment booting the running slot, a release of the update running, the updater
    idle and naming that release, and the /data files intact."""
    verdict = Verdict()
    started = time.monotonic()
    device.power_on()
    try:
        verdict.slot = device.expect_reboot(boot_timeout)
    except (pexpect.TIMEOUT, pexpect.EOF, DeviceError) as error:
        verdict.fail(f"no shell within {boot_timeout:.0f} s ({type(error).__name__})")
        return verdict
    try:
        status = settle(device, expect.config, resume_timeout)
    except (pexpect.TIMEOUT, pexpect.EOF, DeviceError) as error:
        verdict.fail(f"no shell after a reboot that resume made ({type(error).__name__})")
        return verdict
    verdict.slot = device.slot
    verdict.release = device.run_check("cat /etc/tern-release").strip()
    if verdict.release not in expect.releases:
        verdict.fail(f"runs {verdict.release}, expected one of {', '.join(expect.releases)}")
    slot = verdict.slot.lower()
    if status["state"] != "Idle":
        verdict.fail(f"the updater is in state {status['state']} after resume")
    if status["running_slot"] != slot:
        verdict.fail(f"the updater says slot {status['running_slot']}, the prompt {slot}")
    boot = status["boot"] or {}
    if boot.get("trial_pending"):
        verdict.fail("a trial boot is still pending after resume")
    if boot.get("boot_slot") != slot:
        verdict.fail(f"the environment boots slot {boot.get('boot_slot')}, running {slot}")
    if status["artifact_name"] != verdict.release:
        verdict.fail(f"the updater names {status['artifact_name']}, running {verdict.release}")
    if expect.files:
        sums = device.run_check(f"sha256sum {' '.join(expect.files)}; true")
        for path, digest in expect.files.items():
            if f"{digest}  {path}" not in sums:
                verdict.fail(f"{path}: changed or gone")
    verdict.seconds = time.monotonic() - started
    return verdict


def settle(device: Device, config: str, timeout: float) -> dict:
    """Wait until the boot's `resume` is over and the updater idle (a daemon reports the
    result first), following the reboots resume makes (a rollback, or the one an
    interrupted `install --auto-reboot` asked for, or a daemon's as its deployment goes on:
    a status command the shutdown kills is asked again); the updater's last status, idle
    or not after `timeout`."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while True:
        if device.console.expect([UBOOT_BANNER, pexpect.TIMEOUT], time.monotonic() + 1) == 0:
            device.state = "booting"
            device.await_shell(time.monotonic() + 240)
            continue
        try:
            if device.run(RESUME_RUNNING, timeout=60)[1] != 0:
                # Not 0 when the shutdown of a reboot the updater began killed it.
                output, code = device.run(f"tern-updater --config {config} status --json")
                if code == 0:
                    status = json.loads(output)
                    if status["state"] == "Idle":
                        return status
        except pexpect.TIMEOUT:
            continue  # a reboot began during the command
        if time.monotonic() > deadline:
            return status or updater_status(device, config)
        time.sleep(2)


def updater_status(device: Device, config: str) -> dict:
    return json.loads(device.run_check(f"tern-updater --config {config} status --json"))


def fresh_update(device: Device, verdict: Verdict, urls: dict[str, str],
                 config: str = "/etc/tern/updater.toml", timeout: float = 900) -> None:
    """From a checked state: install the other release of `urls` (release -> artifact URL),
    reboot into it, and check that the boot's resume committed it."""
    target = next(name for name in urls if name != verdict.release)
    device.console.sendline(f"tern-updater --config {config} install --auto-reboot "
                            f"{urls[target]}; echo \"install exit $?\"")
    try:
        device.console.expect(r"install exit (\d+)", time.monotonic() + timeout)
        code = device.console.match.group(1)
        if code != "0":
            verdict.fail(f"a fresh install of {target} exited {code}")
            return
        device.expect_reboot(timeout=240)
        status = settle(device, config, 300)
    except (pexpect.TIMEOUT, pexpect.EOF, DeviceError) as error:
        verdict.fail(f"a fresh update to {target} did not finish: {type(error).__name__}")
        return
    _check_updated(device, verdict, target, status, f"a fresh update to {target}")


def deployment_completes(device: Device, verdict: Verdict, expect: Expectations,
                         timeout: float = 900) -> None:
    """From a checked state of a daemon whose server still deploys `expect.deployed`: the
    daemon carries the deployment out (a fresh update from there, as the server asks for
    it): the reboot into that release, committed by the boot's resume. Nothing to do from
    a state already running it."""
    target = expect.deployed
    if verdict.release == target:
        return
    try:
        device.expect_reboot(timeout)
        status = settle(device, expect.config, 300)
    except (pexpect.TIMEOUT, pexpect.EOF, DeviceError) as error:
        verdict.fail(f"the daemon did not carry out the deployment of {target}: "
                     f"{type(error).__name__}")
        return
    _check_updated(device, verdict, target, status, f"the deployment of {target}")


def _check_updated(device: Device, verdict: Verdict, target: str, status: dict,
                   update: str) -> None:
    """After `update` and its reboot: `target` runs, committed, the updater idle."""
    running = device.run_check("cat /etc/tern-release").strip()
    if running != target or status["state"] != "Idle" or status["boot"]["trial_pending"]:
        verdict.fail(f"{update}: runs {running}, updater {status['state']}, boot "
                     f"{status['boot']}")
    else:
        verdict.updated_to = target


# -- a whole replay --------------------------------------------------------------------------

@dataclass(frozen=True)
class Recording:
    """What a scenario's recording left in its directory (recording.json): the raw disk
    the log starts from, the log, the entry where the update began (the entries before it
    are part of every state), what a state may boot into, and what it was made with (the
    digests of the image's files, the commit): a later run refuses a stale recording."""

    directory: Path
    base: Path
    log: Path
    start: int
    expect: Expectations
    scenario: str = ""
    made_with: dict = field(default_factory=dict)

    def save(self) -> None:
        """recording.json, its paths relative to the directory (which may move)."""
        document = {"scenario": self.scenario, "base": _relative(self.base, self.directory),
                    "log": _relative(self.log, self.directory), "start": self.start,
                    "releases": list(self.expect.releases), "files": self.expect.files,
                    "config": self.expect.config, "deployed": self.expect.deployed,
                    "made_with": self.made_with}
        (self.directory / "recording.json").write_text(json.dumps(document, indent=1))

    @classmethod
    def load(cls, directory: Path) -> "Recording":
        directory = Path(directory)
        document = json.loads((directory / "recording.json").read_text())
        expect = Expectations(tuple(document["releases"]), document["files"],
                              document["config"], document.get("deployed", ""))
        return cls(directory, directory / document["base"], directory / document["log"],
                   document["start"], expect, document["scenario"],
                   document.get("made_with", {}))


def _relative(path: Path, directory: Path) -> str:
    path, directory = Path(path).absolute(), Path(directory).absolute()
    return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)


@dataclass
class Booted:
    group: Group
    verdict: Verdict


@dataclass
class ReplayReport:
    scenario: str
    entries: int
    flush_points: int
    states: int
    groups: list[Group]
    booted: list[Booted] = field(default_factory=list)
    seed: int = 0

    @property
    def failures(self) -> list[Booted]:
        return [b for b in self.booted if not b.verdict.ok]

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "seed": self.seed, "log_entries": self.entries,
                "flush_points": self.flush_points, "sampled_states": self.states,
                "distinct_states": len(self.groups), "booted": len(self.booted),
                "failures": len(self.failures),
                "groups": [{"stands_for": len(b.group.states),
                            "state": b.group.representative.label,
                            "kinds": sorted({s.kind for s in b.group.states}),
                            "regions": b.group.describe(),
                            **dataclasses.asdict(b.verdict)} for b in self.booted]}


def plan(recording: Recording, layout: dict, images: Path, seed: int,
         samples: int = 1) -> tuple[WriteLog, list[CrashState], list[Group]]:
    log = read_log(recording.log)
    states = crash_states(log, recording.start, seed, samples)
    contents = Contents(log, recording.base, regions_from_layout(layout))
    return log, states, group_states(states, contents)


@dataclass(frozen=True)
class Boot:
    """A group to boot, with the recording and log its states come from; `fresh_update`:
    after the check, a fresh update from there; `around`: what the device needs up while it
    boots and is checked (the server a state resumes its deployment from); `exclusive`:
    jobs with the same key never boot at once (their `around` needs one port)."""

    recording: Recording
    log: WriteLog
    group: Group
    fresh_update: bool = False
    around: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    exclusive: str = ""


def boot(job: Boot, images: Path, name: str,
         update_urls: dict[str, str] | None = None) -> Verdict:
    """Power on the group's first state as device `name` and check it. Its console log is
    kept in the recording's directory (state-<digest>.log) when the check fails."""
    started = time.monotonic()
    work = job.recording.directory
    console = work / f"state-{job.group.digest}.log"
    disk = write_overlay(job.log, job.group.representative, job.recording.base,
                         work / f"{name}.qcow2")
    device = Device(name, disk, console, ssh_key=images / "keys" / "ssh_ed25519")
    try:
        with job.around():
            verdict = check_state(device, job.recording.expect)
            if verdict.ok and job.fresh_update and job.recording.expect.deployed:
                deployment_completes(device, verdict, job.recording.expect)
            elif verdict.ok and job.fresh_update and update_urls:
                fresh_update(device, verdict, update_urls, job.recording.expect.config)
    except (pexpect.TIMEOUT, pexpect.EOF, DeviceError) as error:
        verdict = Verdict()
        verdict.fail(f"the check did not finish: {type(error).__name__}: {error}")
    finally:
        device.close()
        disk.unlink()
    if verdict.ok:
        console.unlink()
    verdict.seconds = time.monotonic() - started
    return verdict


def boot_all(jobs: list[Boot], images: Path, parallel: int = 1, stop_at: float = math.inf,
             update_urls: dict[str, str] | None = None,
             done=lambda job, verdict: None) -> list[tuple[Boot, Verdict]]:
    """Boot `jobs` on `parallel` devices at once: each takes the next job it may start (no
    job of the same `exclusive` key under way) until none is left or the monotonic clock
    has passed `stop_at`; `done(job, verdict)` runs after each boot, one at a time. On
    Ctrl-C the boots under way are not counted (QEMU gets the signal too) and the interrupt
    goes on once they are over."""
    queue = list(jobs)
    changed = threading.Condition()
    busy: set[str] = set()  # the exclusive keys of the boots under way
    interrupted = threading.Event()
    results: list[tuple[Boot, Verdict]] = []
    errors: list[BaseException] = []

    def next_job() -> Boot | None:
        with changed:
            while queue and not interrupted.is_set() and time.monotonic() <= stop_at:
                job = next((job for job in queue
                            if not job.exclusive or job.exclusive not in busy), None)
                if job is not None:
                    queue.remove(job)
                    if job.exclusive:
                        busy.add(job.exclusive)
                    return job
                changed.wait(1)
            return None

    def worker(name: str) -> None:
        try:
            while (job := next_job()) is not None:
                try:
                    verdict = boot(job, images, name, update_urls)
                finally:
                    with changed:
                        busy.discard(job.exclusive)
                        changed.notify_all()
                with changed:
                    if interrupted.is_set():
                        return
                    results.append((job, verdict))
                    done(job, verdict)
        except BaseException as error:  # a device it cannot drive: the others go on
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(f"replay-{number}",),
                                name=f"replay-{number}") for number in range(1, parallel + 1)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        interrupted.set()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]
    return results


def replay(recording: Recording, layout: dict, images: Path, seed: int = 0,
           samples: int = 1, limit: int | None = None, fresh_updates: int = 0,
           update_urls: dict[str, str] | None = None, progress=print,
           parallel: int = 1) -> ReplayReport:
    """Boot one state of each group (at most `limit` groups, drawn with `seed`) and check
    it, on `parallel` devices at once; after the first `fresh_updates` checked states,
    also a fresh update from there."""
    log, states, groups = plan(recording, layout, images, seed, samples)
    flush_points = sum(state.kind == "flush" for state in states)
    report = ReplayReport(recording.scenario, len(log.writes) - recording.start, flush_points,
                          len(states), groups, seed=seed)
    chosen = sample_groups(groups, limit, seed)
    progress(f"{recording.scenario}: {report.entries} log entries, {flush_points} flush "
             f"points, {len(states)} states, {len(groups)} distinct; booting {len(chosen)}")
    jobs = [Boot(recording, log, group, number < fresh_updates)
            for number, group in enumerate(chosen)]

    def done(job: Boot, verdict: Verdict) -> None:
        report.booted.append(Booted(job.group, verdict))
        progress(f"[{len(report.booted)}/{len(chosen)}] {describe(job, verdict)}")

    boot_all(jobs, images, parallel, update_urls=update_urls, done=done)
    return report


def describe(job: Boot, verdict: Verdict) -> str:
    """A booted group's line of progress."""
    group = job.group
    return (f"{job.recording.scenario} {group.digest} {group.representative.label} (stands "
            f"for {len(group.states)}): {'ok' if verdict.ok else 'FAILED'} slot "
            f"{verdict.slot} {verdict.release} {verdict.seconds:.0f} s"
            + (f", then updated to {verdict.updated_to}" if verdict.updated_to else "")
            + "".join(f"\n    {p}" for p in verdict.problems))
