"""Where the idle daemon's resident memory goes, on the host, run as the device runs it.

    .venv/bin/python -m bench.agent_memory [--polls 30] [--python /usr/bin/python3] [--install]

The agent laid out as its Debian package lays it out (updater and artifact in a private
directory, the package's /usr/bin/tern-updater launcher pointing there), started by
Debian's python3 (on a Debian bookworm host: the device's python3.11 and
python3-cryptography 38, for amd64) with the environment of a service, against a live
`tern-server serve` (HTTPS); enrolled, then restarted and left to poll. After `--polls`
polls: VmRSS, VmHWM and the anonymous/file split (/proc/PID/status), PSS
(smaps_rollup), the RSS of each mapped file and of the anonymous memory (/proc/PID/smaps),
and the modules the daemon holds (from `tern-updater`'s own sys.modules, printed at exit
by a `sitecustomize` on the benchmark's path only). `--install`: then the peak RSS
(VmHWM, sampled every 0.1 s) of `tern-updater install` of the signed release-2 artifact
(`make image`) from its file into the device's slot file. bench.agent measures the same
on the emulated device beside mender-client; this one says what each MiB is.
"""
import argparse
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.host_device import new_device
from testkit.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "build" / "images"
LAUNCHER = ROOT / "debian" / "bin" / "tern-updater"
PRIVATE = "/usr/lib/tern-updater"  # where the launcher looks, rewritten to the copy
# Printed at exit (SIGTERM ends the daemon through KeyboardInterrupt-free SystemExit):
# the top-level modules the process holds, to say which imports stay resident.
SITECUSTOMIZE = """\
import atexit, signal, sys
def _modules():
    names = sorted({name.split('.')[0] for name, module in sys.modules.items() if module})
    print('MODULES ' + ' '.join(names), file=sys.stderr, flush=True)
    print('SUBMODULES ' + str(len(sys.modules)), file=sys.stderr, flush=True)
atexit.register(_modules)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
"""


def lay_out(directory: Path) -> Path:
    """The package's private directory and launcher under `directory`; the launcher."""
    private = directory / "lib" / "tern-updater"
    for package in ("updater", "artifact"):
        shutil.copytree(ROOT / package, private / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (private / "artifact" / "cli.py").unlink()
    launcher = directory / "bin" / "tern-updater"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(LAUNCHER.read_text().replace(PRIVATE, str(private)))
    (directory / "site").mkdir()
    (directory / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return launcher


def kib(text: str, key: str) -> int:
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def by_mapping(pid: int) -> dict[str, int]:
    """RSS in KiB of each mapped file (by name) and of the anonymous mappings."""
    totals: dict[str, int] = defaultdict(int)
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = fields[5] if len(fields) > 5 else "[anonymous]"
        elif fields[0] == "Rss:":
            totals[name] += int(fields[1])
    return totals


def install_peak(command: list[str], env: dict, artifact: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of `command install artifact`."""
    started = time.monotonic()
    process = subprocess.Popen([*command, "install", str(artifact)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while process.poll() is None:
        try:
            peak = kib(Path(f"/proc/{process.pid}/status").read_text(), "VmHWM") or peak
        except FileNotFoundError:
            break
        time.sleep(0.1)
    output = process.communicate()[0].decode(errors="replace")
    if process.wait() != 0 or "installed into slot b" not in output:
        raise RuntimeError(f"the install failed: {output}")
    return time.monotonic() - started, peak / 1024


def polls(log: Path) -> int:
    return log.read_text(errors="replace").count("/deployments/next")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="the interpreter (default: Debian's, as on the device)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the daemon (e.g. MALLOC_ARENA_MAX=1)")
    parser.add_argument("--top", type=int, default=25, help="mappings to list")
    parser.add_argument("--install", action="store_true",
                        help="then the peak RSS of an install of build/images/release-2.mender")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tern-agent-memory-"))
    live = daemon = None
    try:
        launcher = lay_out(work / "package")
        live = LiveServer(work / "server").start()
        admin = ServerAdmin(live)
        mac = "02:00:00:00:00:42"
        device = new_device(work / "device", server_url=live.url,
                            server_certificate=str(live.certificate),
                            identity_script=f"echo mac={mac}", poll_interval=0.2,
                            inventory_interval=86400.0, retry_interval=1.0,
                            verify_keys=[str(IMAGES / "keys" / "artifact.pub")])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": str(work / "package" / "site"),
               **dict(item.split("=", 1) for item in args.env)}
        tern = [args.python, str(launcher), "--config", str(device.toml)]
        command = [*tern, "daemon"]
        log = (work / "daemon.log").open("wb")

        def start() -> subprocess.Popen:
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

        daemon = start()
        admin.accept({"mac": mac}, timeout=60)
        wait_for(lambda: polls(live.output) > 0, timeout=60, what="the first poll")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        before = polls(live.output)
        started = time.monotonic()
        daemon = start()
        wait_for(lambda: polls(live.output) > before, timeout=60, interval=0.05,
                 what="the first poll after the restart")
        first = time.monotonic() - started
        wait_for(lambda: polls(live.output) >= before + args.polls, timeout=10 * args.polls,
                 interval=0.2, what=f"{args.polls} polls")
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        rollup = Path(f"/proc/{daemon.pid}/smaps_rollup").read_text()
        mappings = by_mapping(daemon.pid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        log.close()
        output = (work / "daemon.log").read_text(errors="replace")
        print(f"{args.python}, {' '.join(args.env) or 'no extra environment'}; "
              f"start-up to the first poll {first:.2f} s; after {args.polls} polls:")
        for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            print(f"  {key:8} {kib(status, key) / 1024:6.1f} MiB")
        print(f"  {'Pss':8} {kib(rollup, 'Pss') / 1024:6.1f} MiB  "
              f"(Pss_Anon {kib(rollup, 'Pss_Anon') / 1024:.1f}, "
              f"Pss_File {kib(rollup, 'Pss_File') / 1024:.1f})")
        threads = re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)
        print(f"  threads  {threads}")
        print(f"RSS by mapping (KiB), the {args.top} largest of {len(mappings)}:")
        for name, size in sorted(mappings.items(), key=lambda item: -item[1])[:args.top]:
            print(f"  {size:7} {name}")
        for line in output.splitlines():
            if line.startswith(("MODULES", "SUBMODULES")):
                print(line)
        if args.install:
            artifact = IMAGES / "release-2.mender"
            seconds, peak = install_peak(tern, env, artifact)
            print(f"install of {artifact.name} ({artifact.stat().st_size >> 20} MiB, "
                  f"signature checked): peak RSS {peak:.1f} MiB, {seconds:.1f} s")
    finally:
        if daemon and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if live:
            live.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
