"""Standalone install of a gzip rootfs artifact into a loop device: Tern, the real
`mender install` (Debian's mender-client 3.4) and `dd` of the raw payload, same machine,
same run, alternating. Prints a Markdown table of median wall time, max RSS and ratios.

    sudo .venv/bin/python -m bench.install [--size-mib 256] [--repeat 3]

Both clients install the same artifact (made by Debian's mender-artifact) into the same
loop device, from the "booted" slot A, with a U-Boot environment in a plain file. The
mender client runs as mender-protocol.md §4.2 describes: RootfsPartA/B are the loop
devices, /etc/fw_env.config and /etc/u-boot-initial-env point at the file-backed env,
and a fake `mount` reports slot A as `/`. /etc is changed only inside a private mount
namespace (`unshare -m`, an overlay over /etc), never on the host.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from updater.bootloader.uboot import EnvCopy, UBootEnv

ROOT = Path(__file__).resolve().parents[1]

TERN = Path(sys.executable).with_name("tern-updater")
# What the device runs: Debian's python3 with python3-cryptography, without isal.
DEVICE_PYTHON = "/usr/bin/python3"
DEVICE_PYTHON_ROW = "tern on Debian's python3 (no isal)"
DEVICE_TYPE = "bench-device"
ENV_SIZE = 0x4000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-size-mib", type=int, default=64,
                        help="a second, smaller Tern run: max RSS must not grow with size")
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=ROOT / "build" if (ROOT / "build").is_dir() else None,
                                     prefix="bench-install-") as tmp:
        work = Path(tmp)
        loops = []
        try:
            slot_a, slot_b = (attach(work / f"slot-{s}.img", size + (16 << 20), loops)
                              for s in "ab")
            bench = Bench(work, slot_a, slot_b)
            rows = []
            for kind in ("compressible", "random"):
                payload = make_payload(work / f"{kind}.img", kind, size)
                artifact = make_artifact(work, payload, kind)
                times = bench.compare(payload, artifact, args.repeat)
                rows.append((kind, artifact.stat().st_size, times))
            small = make_payload(work / "small.img", "random", args.rss_size_mib << 20)
            small_rss = bench.tern(make_artifact(work, small, "small"), small)[1]
        finally:
            for loop in loops:
                subprocess.run(["losetup", "-d", loop], check=False)
    print(report(rows, args, small_rss))
    return 0


def attach(path: Path, size: int, loops: list[str]) -> str:
    with open(path, "wb") as file:
        file.truncate(size)
    loop = subprocess.run(["losetup", "-f", "--show", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()
    loops.append(loop)
    return loop


def make_payload(path: Path, kind: str, size: int) -> Path:
    """random: urandom; compressible: the host's own binaries and libraries, concatenated."""
    with open(path, "wb") as out:
        if kind == "random":
            for _ in range(size >> 20):
                out.write(os.urandom(1 << 20))
        else:
            written = 0
            for source in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*.so*")) + \
                    sorted(Path("/usr/bin").iterdir()):
                if written >= size or not source.is_file() or source.is_symlink():
                    continue
                data = source.read_bytes()[: size - written]
                out.write(data)
                written += len(data)
            out.write(b"\0" * (size - written))
    return path


def make_artifact(work: Path, payload: Path, name: str) -> Path:
    out = work / f"{name}.mender"
    subprocess.run(["mender-artifact", "write", "rootfs-image", "-f", payload, "-n",
                    f"bench-{name}", "-t", DEVICE_TYPE, "--compression", "gzip", "-o", out],
                   check=True, capture_output=True)
    return out


class Bench:
    def __init__(self, work: Path, slot_a: str, slot_b: str):
        self.work = work
        self.slot_a, self.slot_b = slot_a, slot_b
        self.part_a = slot_a.removeprefix("/dev/loop")
        self.env_file = work / "uboot.env"
        self.boot_env = {"mender_boot_part": self.part_a,
                         "mender_boot_part_hex": f"{int(self.part_a):x}",
                         "upgrade_available": "0", "bootcount": "0", "bootlimit": "1"}
        (work / "fw_env.config").write_text(f"{self.env_file} 0x0 {ENV_SIZE:#x}\n")
        (work / "u-boot-initial-env").write_text(
            "".join(f"{k}={v}\n" for k, v in self.boot_env.items()))
        (work / "cmdline").write_text(f"root={slot_a}\n")
        (work / "mender.conf").write_text(json.dumps({"RootfsPartA": slot_a,
                                                      "RootfsPartB": slot_b}))
        fake_bin = work / "fake-bin"
        fake_bin.mkdir()
        (fake_bin / "mount").write_text(f"#!/bin/sh\necho '{slot_a} on / type ext4 (rw)'\n")
        (fake_bin / "mount").chmod(0o755)

    def compare(self, payload: Path, artifact: Path, repeat: int) -> dict[str, list]:
        runs = {"tern": [], "tern --no-verify-readback": [], DEVICE_PYTHON_ROW: [],
                "mender": [], "dd": []}
        for _ in range(repeat):
            runs["dd"].append(self.dd(payload))
            runs["tern"].append(self.tern(artifact, payload))
            runs["mender"].append(self.mender(artifact, payload))
            runs["tern --no-verify-readback"].append(
                self.tern(artifact, payload, "--no-verify-readback"))
            runs[DEVICE_PYTHON_ROW].append(self.tern(artifact, payload, python=DEVICE_PYTHON))
        return runs

    def reset(self) -> Path:
        self.env_file.write_bytes(b"\0" * ENV_SIZE)
        UBootEnv([EnvCopy(str(self.env_file), 0, ENV_SIZE)]).write(self.boot_env)
        data = self.work / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        (data / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
        # A slot holds a different image before an update: mender skips writing blocks that
        # are already identical, so a slot left with the last run's payload would flatter it.
        fd = os.open(self.slot_b, os.O_WRONLY)
        try:
            zeros = bytes(4 << 20)
            blocks = os.lseek(fd, 0, os.SEEK_END) // len(zeros)
            os.lseek(fd, 0, os.SEEK_SET)
            for _ in range(blocks):
                os.write(fd, zeros)
            os.fsync(fd)
        finally:
            os.close(fd)
        return data

    def dd(self, payload: Path) -> tuple[float, int]:
        self.reset()
        return self.timed(["dd", f"if={payload}", f"of={self.slot_b}", "bs=4M", "conv=fsync",
                           "status=none"], payload)

    def tern(self, artifact: Path, payload: Path, *flags: str,
             python: str | None = None) -> tuple[float, int]:
        """The venv's tern-updater, or `python -m updater.cli` (the device's interpreter)."""
        data = self.reset()
        program = [python, "-m", "updater.cli"] if python else [str(TERN)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)} if python else None
        return self.timed([*program, "--data-dir", str(data), "--bootloader", "uboot",
                           "--fw-env-config", str(self.work / "fw_env.config"),
                           "--rootfs-a", self.slot_a, "--rootfs-b", self.slot_b,
                           "--cmdline-file", str(self.work / "cmdline"),
                           "--device-type", DEVICE_TYPE,
                           "--scripts-dir", str(self.work / "none"),
                           "--artifact-info", str(self.work / "none"), *flags,
                           "install", str(artifact)], payload, env=env)

    def mender(self, artifact: Path, payload: Path) -> tuple[float, int]:
        data = self.reset()
        upper, workdir = self.work / "etc-upper", self.work / "etc-work"
        shutil.rmtree(upper, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        upper.mkdir()
        workdir.mkdir()
        shutil.copy(self.work / "fw_env.config", upper / "fw_env.config")
        shutil.copy(self.work / "u-boot-initial-env", upper / "u-boot-initial-env")
        (upper / "mender").mkdir()
        (upper / "mender/artifact_info").write_text("artifact_name=factory\n")
        # the real mount, not the fake one on PATH
        setup = (f"/usr/bin/mount --make-rprivate / && /usr/bin/mount -t overlay overlay "
                 f"-o lowerdir=/etc,upperdir={upper},workdir={workdir} /etc && exec \"$@\"")
        command = ["mender", "--no-syslog", "-c", str(self.work / "mender.conf"),
                   "-d", str(data), "install", str(artifact)]
        return self.timed(["unshare", "-m", "sh", "-c", setup, "sh"], payload, command,
                          env={**os.environ, "PATH": f"{self.work / 'fake-bin'}:"
                                                     f"{os.environ['PATH']}"})

    def timed(self, prefix: list[str], payload: Path, command: list[str] = (),
              env=None) -> tuple[float, int]:
        """(wall seconds, max RSS KiB) of the last command, checked to have written B."""
        stats = self.work / "time.out"
        wrapped = [*prefix, "/usr/bin/time", "-f", "%e %M", "-o", str(stats), *command] \
            if command else ["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *prefix]
        result = subprocess.run(wrapped, capture_output=True, text=True, env=env)
        if os.environ.get("BENCH_DEBUG"):
            print(result.stderr, file=sys.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"{wrapped[0]}...: exit {result.returncode}\n{result.stderr}")
        wall, rss = stats.read_text().split()[-2:]
        if digest(self.slot_b, payload.stat().st_size) != digest(payload):
            raise RuntimeError(f"{' '.join(wrapped)}: slot B differs from the payload")
        return float(wall), int(rss)


def digest(path, size: int | None = None) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        remaining = size if size is not None else os.fstat(file.fileno()).st_size
        while remaining:
            chunk = file.read(min(4 << 20, remaining))
            sha.update(chunk)
            remaining -= len(chunk)
    return sha.hexdigest()


def report(rows, args, small_rss: int) -> str:
    lines = [f"{args.size_mib} MiB payload, gzip artifact by mender-artifact, into a loop "
             f"device; median of {args.repeat} alternating runs each.", "",
             "| data | artifact | tool | wall median (s) | wall min (s) | max RSS (MiB) "
             "| median vs mender | median vs dd | min vs mender |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, artifact_size, runs in rows:
        wall = {tool: statistics.median(w for w, _ in r) for tool, r in runs.items()}
        fastest = {tool: min(w for w, _ in r) for tool, r in runs.items()}
        rss = {tool: max(m for _, m in r) / 1024 for tool, r in runs.items()}
        for tool in runs:
            lines.append(f"| {kind} | {artifact_size / 2**20:.0f} MiB | {tool} | "
                         f"{wall[tool]:.2f} | {fastest[tool]:.2f} | {rss[tool]:.1f} | "
                         f"{wall[tool] / wall['mender']:.2f}x | {wall[tool] / wall['dd']:.2f}x | "
                         f"{fastest[tool] / fastest['mender']:.2f}x |")
    lines += ["", f"Tern max RSS with a {args.rss_size_mib} MiB random payload: "
                  f"{small_rss / 1024:.1f} MiB."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
