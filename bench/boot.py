"""Emulated device timings: boot to shell, update reboot, rollback cycle, two devices at once.

    .venv/bin/python -m bench.boot [--runs N]

Builds the image if needed (images/build.py), runs real QEMU devices one or two
at a time, and prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from qemu.device import Device, make_overlay
from qemu.guest import install_to_b

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ROOT / "build" / "images"


def new_device(workdir: Path, name: str, cpu: str, extra_disks=()) -> Device:
    overlay = make_overlay(IMAGES / "disk.img", workdir / f"{name}.qcow2")
    return Device(name, overlay, workdir / f"{name}.log", extra_disks=extra_disks, cpu=cpu)


def timed(action) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def boot_via_uboot_prompt(workdir: Path, cpu: str) -> float:
    """What the test fixtures do: stop autoboot at once, then `boot`."""
    device = new_device(workdir, "boot", cpu)
    try:
        return timed(lambda: device.transition("shell"))
    finally:
        device.close()


def boot_unattended(workdir: Path, cpu: str) -> float:
    """A plain power-on: U-Boot's 2 s autoboot delay included."""
    device = new_device(workdir, "autoboot", cpu)
    try:
        return timed(lambda: (device.power_on(), device.expect_reboot()))
    finally:
        device.close()


def reboot_into(workdir: Path, cpu: str, release: str, expected_slot: str) -> float:
    """From `reboot` typed on A to the shell after installing `release` to B as a trial."""
    device = new_device(workdir, release, cpu, [IMAGES / f"{release}.ext4"])
    try:
        device.transition("shell")
        install_to_b(device)
        device.console.sendline("reboot")
        start = time.monotonic()
        slot = device.expect_reboot(timeout=180)
        assert slot == expected_slot, f"{release}: booted {slot}, expected {expected_slot}"
        return time.monotonic() - start
    finally:
        device.close()


def two_in_parallel(workdir: Path, cpu: str) -> float:
    devices = [new_device(workdir, f"parallel{i}", cpu) for i in range(2)]
    threads = [threading.Thread(target=d.transition, args=("shell",)) for d in devices]
    try:
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(d.state == "shell" for d in devices)
        return time.monotonic() - start
    finally:
        for d in devices:
            d.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", default="cortex-a57", help="QEMU -cpu, e.g. max,pauth-impdef=on")
    parser.add_argument("--only", help="run only the measurements whose label contains this")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "images" / "build.py")], check=True)
    cases = [
        ("boot to shell (fixture: autoboot stopped, `boot`)", boot_via_uboot_prompt),
        ("boot to shell (unattended power-on, bootdelay 2 s)", boot_unattended),
        ("update reboot: `reboot` on A -> shell on B (trial)",
         lambda workdir, cpu: reboot_into(workdir, cpu, "release-2", "B")),
        ("rollback cycle: `reboot` -> B panics -> reset -> shell on A",
         lambda workdir, cpu: reboot_into(workdir, cpu, "release-broken", "A")),
        ("two devices booting in parallel (wall time for both)", two_in_parallel),
    ]
    print(f"| measurement ({args.runs} runs, -cpu {args.cpu}, seconds) | median | min | max |")
    print("|---|---|---|---|")
    for label, case in cases:
        if args.only and args.only not in label:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            samples = [case(Path(tmp), args.cpu) for _ in range(args.runs)]
        print(f"| {label} | {statistics.median(samples):.1f} | {min(samples):.1f} "
              f"| {max(samples):.1f} |", flush=True)


if __name__ == "__main__":
    main()
