"""Delta updates side by side (issue 19 §3): for each release pair of `make delta-images`
(release-1 and the same image with one Debian package or one configuration file changed),
the bytes a device holding release-1 transfers for the other release, as a share of the
compressed full artifact, for

- Tern's block index: what the adaptive install fetches (the same calls: the head, the index's
  top, `survey_slots`, the leaves of the chunks no slot matches in place, `plan_fetch` with
  the device's range coalescing) for the pair's block-indexed artifact, the active slot
  holding release-1 and an erased target slot (a fresh update); and again with the target
  slot half written (an install cut halfway, resumed);
- `xdelta3` (Mender's delta engine) and `zstd --patch-from`: static patches against the
  known base, the whole image as their window;
- the full artifact: what a full install downloads, and the same image without an index.

The bytes need no device and no network. `--host-install` times the installs on the host
instead: per pair, `tern-updater install URL` (a fresh process, as on the device) of the pair's
artifact from a plain HTTP server on loopback with single ranges (testkit.range_files), into
slot files on a simulated device (testkit.host_device) whose slots A and B both hold
release-1: the full install (`delta_max_share = 0`), the delta, and the delta with the first
half of the new image already in slot B, alternating, `--repeat` times; median wall time and
CPU time (user + system: on the emulated device the install is CPU-bound), peak RSS (VmHWM)
and the bytes the server sent, so the ratio delta / full is the figure to read.
`--python /usr/bin/python3` runs the updater on Debian's interpreter, as the device does.
`--device` measures the device's columns instead: on one
emulated device (`make image`'s disk, booted once), per pair, `tern-updater install URL` of
the pair's artifact from a plain HTTP server on the host with single ranges
(testkit.range_files), into slot B holding release-1: the full install
(`delta_max_share = 0`), the delta, and the delta with the first half of the new image
already in the target slot (a resumed install), alternating, `--repeat` times. Median wall
time from the console's command to its end, peak RSS (VmHWM, sampled every 0.5 s, the
highest of the repetitions), and the bytes the server sent; each install is rolled back and
slot B copied back from slot A before the next.

    make delta-images && .venv/bin/python -m bench.delta
    make delta-images && .venv/bin/python -m bench.delta --host-install [--python /usr/bin/python3]
    make delta-images && .venv/bin/python -m bench.delta --device [--repeat 3]
"""
import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from artifact import ArtifactReader
from artifact.block_index import BlockIndex, index_anchor
from artifact.block_plan import MAX_GAP, FetchPlan, plan_fetch, survey_slots
from bench.block_index import write
from qemu.device import Device, make_overlay
from qemu.guest import boot_resume_finished
from testkit import wait_for
from testkit.host_device import new_device
from testkit.range_files import RangeFileServer

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "build" / "images"
GOALS = {"release-1-package": 0.10, "release-1-config": 0.01}  # the issue's, per pair
INDEX_GOAL = 0.015


@dataclass
class Row:
    pair: str
    method: str
    transfer: int  # bytes
    full: int  # the compressed full artifact's download, the denominator
    seconds: float = 0.0
    note: str = ""
    goal: float | None = None  # the goal for this share, if it has one

    def line(self) -> str:
        share = self.transfer / self.full
        mark = "" if self.goal is None else (" ✓" if share <= self.goal else " ✗")
        return (f"| {self.pair} | {self.method} | {self.transfer:,} | {share:.2%}{mark} | "
                f"{self.seconds:.1f} | {self.note} |")


@dataclass
class TernPlan:
    plan: FetchPlan
    leaf_chunks: int  # chunks whose leaves were fetched
    leaf_bytes: int  # the bytes of their leaf ranges


def tern_plan(artifact: Path, target: Path, active: Path) -> TernPlan:
    """What the adaptive install fetches (updater/install/adaptive.py, the same calls): the
    head, the index's top, the leaves of the chunks no slot matches in place, the chunks."""
    size = artifact.stat().st_size
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        anchor = index_anchor(reader.header)
        stream.seek(size - anchor.size)
        index = BlockIndex.parse(stream.read(anchor.size), anchor)
        survey = survey_slots(index, target, active)
        leaf_ranges = survey.leaf_ranges(index, size - anchor.area)
        leaf_chunks = sum(survey.unknown)

        @contextmanager
        def open_range(start: int, end: int):
            stream.seek(start)
            yield io.BytesIO(stream.read(end - start))

        survey.fetch_leaves(index, leaf_ranges, open_range)
        leaf_bytes = sum(r.size for r in leaf_ranges)
        plan = plan_fetch(index, reader.payload_offset, survey.active.find, artifact_size=size,
                          index_size=anchor.area, index_fetched=anchor.size + leaf_bytes,
                          max_gap=MAX_GAP, held=survey.held, same=survey.same)
    return TernPlan(plan, leaf_chunks, leaf_bytes)


def index_anchor_of(artifact: Path):
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        return index_anchor(reader.header)


def slot_file(path: Path, size: int, content: Path | None = None, length: int = 0) -> Path:
    """A target slot file of `size` bytes: zeros (an erased slot), the first `length` bytes
    of `content` written (an install cut there)."""
    with open(path, "wb") as slot:
        slot.truncate(size)
        if content is not None:
            with open(content, "rb") as source:
                slot.write(source.read(length))
    return path


def describe(tern: TernPlan) -> str:
    plan = tern.plan
    return (f"{len(plan.ranges)} chunk ranges, {plan.blocks_fetched} blocks fetched, "
            f"{plan.blocks_local} from the active slot, {plan.blocks_held} in place; the "
            f"leaves of {tern.leaf_chunks} chunks ({tern.leaf_bytes:,} bytes)")


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    return time.monotonic() - started


def measure(name: str, pair: dict, base: Path, work: Path) -> list[Row]:
    new = base.parent / pair["rootfs"]
    artifact = base.parent / pair["artifact"]
    rows = []
    size = new.stat().st_size
    started = time.monotonic()
    fresh = tern_plan(artifact, slot_file(work / "erased", size), base)
    seconds = time.monotonic() - started
    full = fresh.plan.full_bytes
    rows.append(Row(name, "Tern block index, fresh update (active slot only)",
                    fresh.plan.total_bytes, full, seconds, describe(fresh), GOALS[name]))
    half = size // 2 - size // 2 % 4096
    started = time.monotonic()
    resumed = tern_plan(artifact, slot_file(work / "half", size, new, half), base)
    rows.append(Row(name, "Tern block index, resumed (target slot half written)",
                    resumed.plan.total_bytes, full, time.monotonic() - started,
                    describe(resumed), GOALS[name]))
    patch = work / f"{name}.xdelta"
    seconds = timed(["xdelta3", "-e", "-9", "-B", str(base.stat().st_size), "-f",
                     "-s", str(base), str(new), str(patch)])
    rows.append(Row(name, "xdelta3 -9, whole image as source window", patch.stat().st_size,
                    full, seconds, "static: needs the exact base"))
    patch = work / f"{name}.zst"
    seconds = timed(["zstd", "-q", "-f", "-19", "--long=28", "-T0", f"--patch-from={base}",
                     str(new), "-o", str(patch)])
    rows.append(Row(name, "zstd -19 --long=28 --patch-from", patch.stat().st_size, full,
                    seconds, "static: needs the exact base"))
    anchor = index_anchor_of(artifact)
    rows.append(Row(name, "Tern block index: the index itself (top and all leaves)",
                    anchor.area, full, 0.0,
                    f"{anchor.area / artifact.stat().st_size:.2%} of the artifact file: top "
                    f"{anchor.size:,}, leaves {anchor.leaves:,}", INDEX_GOAL))
    rows.append(Row(name, "full artifact, block-indexed (what a full install downloads)", full,
                    full, 0.0, f"artifact file {artifact.stat().st_size:,} bytes with its index"))
    plain = work / f"{name}-plain.mender"
    seconds = write(new, plain, None)
    rows.append(Row(name, "full artifact, Tern without index", plain.stat().st_size, full,
                    seconds, "the same image, one gzip stream"))
    plain.unlink()
    return rows


TERN = "tern-updater --config"
FULL_CONFIG, DELTA_CONFIG = "/tmp/full.toml", "/etc/tern/updater.toml"
INSTALLS = ("full", "delta", "delta, resumed")


@dataclass
class DeviceRow:
    pair: str
    install: str
    seconds: list[float]  # wall time of each repetition
    peak_mib: float  # the highest VmHWM of the repetitions
    sent: int  # bytes the host's server sent, in the last repetition
    mode: str  # the install's download stats: adaptive or full (the last repetition's)

    def line(self) -> str:
        spread = (f" ({min(self.seconds):.1f}-{max(self.seconds):.1f})"
                  if len(self.seconds) > 1 else "")
        return (f"| {self.pair} | {self.install} | {statistics.median(self.seconds):.1f} s"
                f"{spread} | {self.peak_mib:.1f} MiB | {self.sent:,} ({self.mode}) |")


def device_url(server: RangeFileServer) -> str:
    return server.url.replace("127.0.0.1", "10.0.2.2")  # QEMU's user network: the host


def device_install(device: Device, config: str, url: str) -> tuple[float, float, str]:
    """Seconds, peak RSS (MiB) and the download stats' mode of `tern-updater install`."""
    script = (f"{TERN} {config} install {url} >/tmp/install.log 2>&1 & pid=$!; peak=0; "
              "while [ -e /proc/$pid ]; do "
              "h=$(sed -n 's/^VmHWM:[^0-9]*\\([0-9]*\\).*/\\1/p' /proc/$pid/status); "
              "[ -n \"$h\" ] && peak=$h; sleep 0.5; done; wait $pid; "
              "echo \"exit=$? peak=$peak\"; grep -o 'download stats[^}]*' "
              "/data/tern/state.json | tail -n 1")  # the update's log, before the rollback
    started = time.monotonic()
    output = device.run_check(script, timeout=3600)
    seconds = time.monotonic() - started
    found = re.search(r"exit=(\d+) peak=(\d+)", output)
    if found[1] != "0":
        raise RuntimeError(f"install failed: {output}\n"
                           f"{device.run('tail -n 20 /tmp/install.log')[0]}")
    mode = re.search(r'mode\\*": \\*"(\w+)', output)  # JSON in JSON: quotes escaped
    device.run_check(f"{TERN} {config} rollback >/dev/null 2>&1", timeout=600)
    return seconds, int(found[2]) / 1024, mode[1] if mode else "?"


def measure_device(pairs: dict, images: Path, work: Path, repeat: int) -> list[DeviceRow]:
    device = Device("bench-delta", make_overlay(images / "disk.img", work / "delta.qcow2"),
                    work / "console.log", boot_timeout=300)  # under nice, loaded
    rows = []
    try:
        device.transition("shell")
        wait_for(lambda: boot_resume_finished(device), timeout=600, interval=2,
                 what="the boot's resume")
        device.run_check(f"cp {DELTA_CONFIG} {FULL_CONFIG} && "
                         f"echo 'delta_max_share = 0.0' >> {FULL_CONFIG}")
        for name, pair in pairs.items():
            new = images / pair["rootfs"]
            pair_rows = {install: DeviceRow(name, install, [], 0.0, 0, "?")
                         for install in INSTALLS}
            with RangeFileServer(images / pair["artifact"]) as artifact, \
                    RangeFileServer(new) as image:
                for _ in range(repeat):
                    for install, row in pair_rows.items():
                        device.run_check("dd if=/dev/vda2 of=/dev/vda3 bs=1M 2>/dev/null "
                                         "&& sync", timeout=1200)  # slot B: release-1 again
                        if install == "delta, resumed":
                            half = new.stat().st_size // 2
                            device.run_check(f"wget -q -O - {device_url(image)} | head -c "
                                             f"{half} | dd of=/dev/vda3 bs=1M 2>/dev/null "
                                             "&& sync", timeout=1200)
                        before = artifact.sent
                        config = FULL_CONFIG if install == "full" else DELTA_CONFIG
                        seconds, peak, row.mode = device_install(device, config,
                                                                 device_url(artifact))
                        row.seconds.append(seconds)
                        row.peak_mib = max(row.peak_mib, peak)
                        row.sent = artifact.sent - before
            for row in pair_rows.values():
                print(row.line(), flush=True)
            rows.extend(pair_rows.values())
    finally:
        device.close()
    return rows


@dataclass
class HostRow:
    pair: str
    install: str
    seconds: list[float]  # wall time of each repetition
    cpu: list[float]  # the process's user + system time of each repetition
    peak_mib: float  # the highest VmHWM of the repetitions
    sent: int  # bytes the server sent, last repetition
    mode: str

    def line(self) -> str:
        return (f"| {self.pair} | {self.install} | {statistics.median(self.seconds):.1f} s | "
                f"{statistics.median(self.cpu):.1f} s | {self.peak_mib:.1f} MiB | "
                f"{self.sent:,} ({self.mode}) |")


def host_install(root: Path, base: Path, new: Path, url: str, install: str,
                 python: str | None) -> tuple[float, float, float, str]:
    """Wall time, CPU time, peak RSS (MiB) and the download mode of one `tern-updater install
    URL` on a fresh simulated device whose slots both hold release-1."""
    device = new_device(root, delta_max_share=0.0 if install == "full" else 0.8)
    for slot in "ab":
        shutil.copyfile(base, device.slot(slot))
    if install == "delta, resumed":
        half = new.stat().st_size // 2
        with open(new, "rb") as source, open(device.slot("b"), "r+b") as target:
            target.write(source.read(half))
    os.sync()
    updater = [str(Path(sys.executable).parent / "tern-updater")] if python is None else \
        [python, "-c", "import sys; from updater.cli import main; sys.exit(main())"]
    command = [*updater, "--config", str(device.toml), "install", url]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    peak = 0
    while not (waited := os.wait4(process.pid, os.WNOHANG))[0]:
        # VmHWM, as on the device (ru_maxrss would count the parent's pages the fork saw)
        found = re.search(r"^VmHWM:\s*(\d+)", Path(f"/proc/{process.pid}/status").read_text(),
                          re.MULTILINE)
        peak = int(found[1]) if found else peak
        time.sleep(0.05)
    seconds = time.monotonic() - started
    _, status, usage = waited
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{install} install exited with {process.returncode}")
    update = device.stored()["update"]
    mode = next((re.search(r'"mode": "(\w+)"', line["message"])[1] for line in update.log
                 if line["message"].startswith("download stats")), "?")
    shutil.rmtree(root)
    return seconds, usage.ru_utime + usage.ru_stime, peak / 1024, mode


def host_table(pairs: dict, images: Path, repeat: int, python: str | None) -> int:
    print("| pair | install | wall time (host) | CPU time (host) | peak RSS (host) "
          "| bytes sent (mode) |")
    print("|---|---|---:|---:|---:|---:|")
    load = os.getloadavg()[0]
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-delta-host-") as tmp:
        for name, pair in pairs.items():
            base, new = images / f"{pair['from']}.ext4", images / pair["rootfs"]
            rows = {install: HostRow(name, install, [], [], 0.0, 0, "") for install in INSTALLS}
            with RangeFileServer(images / pair["artifact"]) as artifact:
                for _ in range(repeat):  # the installs alternate within each repetition
                    for install, row in rows.items():
                        before = artifact.sent
                        seconds, cpu, peak, row.mode = host_install(
                            Path(tmp) / "device", base, new, artifact.url, install, python)
                        row.seconds.append(seconds)
                        row.cpu.append(cpu)
                        row.peak_mib = max(row.peak_mib, peak)
                        row.sent = artifact.sent - before
            for row in rows.values():
                print(row.line(), flush=True)
            full = rows["full"]
            for install in INSTALLS[1:]:
                wall = statistics.median(rows[install].seconds) / statistics.median(full.seconds)
                cpu = statistics.median(rows[install].cpu) / statistics.median(full.cpu)
                ratios.append(f"{name}, {install} / full: wall {wall:.2f}x, CPU {cpu:.2f}x")
    print(f"\nMedians of {repeat} runs; the updater on {python or sys.executable}.")
    print("\n".join(ratios))
    print(f"Load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--device", action="store_true",
                        help="the device's columns instead of the bytes (one emulated "
                             "device, minutes)")
    parser.add_argument("--host-install", action="store_true",
                        help="time the full and the delta install on the host, into slot "
                             "files (minutes)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="--host-install and --device: runs of each install (the "
                             "median is shown)")
    parser.add_argument("--python", help="--host-install: run the updater with this interpreter "
                                         "(e.g. Debian's /usr/bin/python3, as the device: no "
                                         "python-isal) instead of the venv's")
    args = parser.parse_args()
    stamp = args.images / "delta.json"
    if not stamp.exists():
        print(f"bench.delta: no {stamp}: run `make delta-images` first", file=sys.stderr)
        return 1
    pairs = json.loads(stamp.read_text())["pairs"]
    if args.device:
        return device_table(pairs, args.images, args.repeat)
    if args.host_install:
        return host_table(pairs, args.images, args.repeat, args.python)
    print("| pair | method | bytes | share of the compressed full artifact | seconds (host) "
          "| note |")
    print("|---|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        for name, pair in pairs.items():
            for row in measure(name, pair, args.images / f"{pair['from']}.ext4", Path(tmp)):
                print(row.line(), flush=True)
    print(f"\nGoals: release-1-package <= {GOALS['release-1-package']:.0%} (stretch 5 %), "
          f"release-1-config <= {GOALS['release-1-config']:.0%}, index <= {INDEX_GOAL:.1%}. "
          f"Loaded host: {os.getloadavg()[0]:.1f}.")
    return 0


def device_table(pairs: dict, images: Path, repeat: int) -> int:
    load = os.getloadavg()[0]
    print("| pair | install | wall time (device) | peak RSS (device) | bytes sent (mode) |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-delta-device-") as tmp:
        rows = measure_device(pairs, images, Path(tmp), repeat)
    for name in pairs:
        full, delta = (next(r for r in rows if (r.pair, r.install) == (name, install))
                       for install in ("full", "delta"))
        ratio = statistics.median(delta.seconds) / statistics.median(full.seconds)
        print(f"\n{name}: delta / full wall time {ratio:.2f}x (medians of {repeat}; "
              "goal <= 1.0x)")
    print(f"Load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
