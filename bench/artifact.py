#!/usr/bin/env python3
"""Benchmark tern-artifact against Debian's mender-artifact, side by side in one run.

For a compressible and a random image: write a gzip (and an uncompressed)
rootfs-image artifact with each tool, and validate the same artifact (written by
mender-artifact) with each. Prints wall time and max RSS (median of --repeat
runs) and the Tern/mender ratio; --rss-image-mib adds a large image for the
memory ceiling.

    python -m bench.artifact [--size-mib 256] [--repeat 3] [--rss-image-mib 1024]
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TERN = str(Path(sys.executable).parent / "tern-artifact")
MENDER = shutil.which("mender-artifact")
TIME = "/usr/bin/time"  # GNU time: a fork of this big process would inflate ru_maxrss


def measure(command: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, max RSS in MB) as GNU time reports them."""
    result = subprocess.run([TIME, "-f", "%e %M", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr}")
    wall, rss_kb = result.stderr.split()[-2:]
    return float(wall), int(rss_kb) / 1024


def compare(commands: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, float]]:
    """Run each tool's command `repeat` times, alternating tools so that background load
    falls on both alike; return per tool (median wall seconds, max RSS MB)."""
    runs: dict[str, list[tuple[float, float]]] = {tool: [] for tool in commands}
    for _ in range(repeat):
        for tool, command in commands.items():
            runs[tool].append(measure(command))
    return {tool: (statistics.median(r[0] for r in results), max(r[1] for r in results))
            for tool, results in runs.items()}


def compressible_image(path: Path, size: int) -> None:
    """Executables and libraries of this machine, concatenated: like a real rootfs."""
    with open(path, "wb") as out:
        written = 0
        while written < size:
            for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib"):
                for file in sorted(Path(directory).rglob("*")):
                    if written >= size:
                        return
                    if file.is_file() and not file.is_symlink():
                        data = file.read_bytes()[: size - written]
                        out.write(data)
                        written += len(data)


def random_image(path: Path, size: int) -> None:
    generator = random.Random(3)
    with open(path, "wb") as out:
        for _ in range(0, size, 1 << 24):
            out.write(generator.randbytes(min(1 << 24, size)))
        out.truncate(size)


def prepare(workdir: Path, name: str, size_mib: int, make) -> Path:
    path = workdir / f"{name}-{size_mib}MiB.img"
    if not path.exists() or path.stat().st_size != size_mib << 20:
        make(path, size_mib << 20)
    return path


def write_command(tool: str, image: Path, out: Path, compression: str) -> list[str]:
    command = [tool, "write", "rootfs-image", "-f", str(image), "-n", "bench-1", "-t", "bench",
               "--compression", compression, "-o", str(out)]
    return command + (["--no-progress"] if tool == MENDER else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-image-mib", type=int, default=1024,
                        help="size of the image for the memory ceiling row (0: skip)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    if not MENDER or not os.path.exists(TIME):
        sys.exit("mender-artifact or GNU time is missing: run `make deps`")
    args.workdir.mkdir(parents=True, exist_ok=True)

    rows = []
    images = [("compressible", compressible_image), ("random", random_image)]
    for data, make in images:
        image = prepare(args.workdir, data, args.size_mib, make)
        for compression in ("gzip", "none"):
            outs = {t: args.workdir / f"{data}-{compression}-{n}.mender"
                    for n, t in (("tern", TERN), ("mender", MENDER))}
            results = compare({tool: write_command(tool, image, outs[tool], compression)
                               for tool in (TERN, MENDER)}, args.repeat)
            size = {t: outs[t].stat().st_size / 2**20 for t in outs}
            rows.append((f"write {compression}", f"{data} {args.size_mib} MiB",
                         results[TERN], results[MENDER],
                         f"{size[TERN]:.1f} / {size[MENDER]:.1f} MiB"))
            if compression == "gzip":
                target = str(outs[MENDER])  # both validate the same file
                results = compare({tool: [tool, "validate", target] for tool in (TERN, MENDER)},
                                  args.repeat)
                rows.append(("validate gzip", f"{data} {args.size_mib} MiB", results[TERN],
                             results[MENDER], "mender-artifact's artifact"))
    if args.rss_image_mib:
        image = prepare(args.workdir, "random", args.rss_image_mib, random_image)
        outs = {t: args.workdir / f"big-{n}.mender" for n, t in (("tern", TERN),
                                                                   ("mender", MENDER))}
        results = compare({tool: write_command(tool, image, outs[tool], "gzip")
                           for tool in (TERN, MENDER)}, 1)
        rows.append(("write gzip", f"random {args.rss_image_mib} MiB", results[TERN],
                     results[MENDER], "one run"))
        results = compare({tool: [tool, "validate", str(outs[MENDER])]
                           for tool in (TERN, MENDER)}, 1)
        rows.append(("validate gzip", f"random {args.rss_image_mib} MiB", results[TERN],
                     results[MENDER], "one run"))
        for out in outs.values():
            out.unlink()

    print(f"tern-artifact vs mender-artifact ({subprocess.run([MENDER, '--version'], capture_output=True, text=True).stdout.split()[-1]}), "  # noqa: E501
          f"{os.cpu_count()} CPUs, median of {args.repeat} runs\n")
    header = ("operation", "data", "tern s", "mender s", "ratio", "tern RSS MB",
              "mender RSS MB", "note")
    table = [header] + [
        (op, data, f"{t[0]:.2f}", f"{m[0]:.2f}", f"{t[0] / m[0]:.2f}", f"{t[1]:.0f}",
         f"{m[1]:.0f}", note) for op, data, t, m, note in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
