"""Power cuts (SIGKILL of QEMU) at random moments: every power-on boots a committed slot.

One device and one overlay per test, power-cycled CYCLES times at seeded random moments
(a boot each: CI's sample; `make campaign` and `make replay` are the long runs). The
random seed is printed so a failing run can be repeated with TERN_SEED=<seed>.
"""
import os
import random
import re
import time

import pytest

from qemu.guest import data_marker, fw_env, put_data_marker

pytestmark = pytest.mark.qemu

CYCLES = 4


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("TERN_SEED", time.time_ns() % 1_000_000))
    print(f"TERN_SEED={seed}")
    return random.Random(seed)


def test_power_cut_while_writing_slot_b(device, rng):
    device.transition("shell")
    put_data_marker(device)
    for cycle in range(CYCLES):
        device.console.sendline("echo 'dd ''started'; "
                                "dd if=/dev/urandom of=/dev/vda3 bs=1M count=150 conv=fsync")
        device.console.expect("dd started", time.monotonic() + 30)
        time.sleep(rng.uniform(0.1, 3.0))  # the whole dd takes about 5 s
        device.power_cut()
        device.transition("shell")
        assert device.slot == "A", f"cycle {cycle}"
        assert fw_env(device)["mender_boot_part"] == "2"
        assert data_marker(device) == "survives"


# Writes committed environments with a growing sequence number, alternating A and B.
SETENV_LOOP = (
    "i=$(fw_printenv -n tern_seq 2>/dev/null || echo 0); while true; do i=$((i + 1)); "
    "part=$((2 + i % 2)); "
    "printf 'mender_boot_part=%s\\nmender_boot_part_hex=%s\\nupgrade_available=0\\n"
    "tern_seq=%s\\n' $part $part $i > /tmp/env; "
    "fw_setenv -s /tmp/env && echo \"tern_seq $i written\"; done"
)


def test_power_cut_during_fw_setenv(device, rng):
    device.transition("shell")
    put_data_marker(device)
    for cycle in range(CYCLES):
        device.console.sendline(SETENV_LOOP)
        device.console.expect(r"tern_seq \d+ written", time.monotonic() + 30)
        time.sleep(rng.uniform(0.0, 2.0))
        device.power_cut()
        log = device.log_path.read_text()
        written = [int(n) for n in re.findall(r"tern_seq (\d+) written", log)]
        device.transition("shell")
        env = fw_env(device)
        seq = int(env["tern_seq"])
        # Only the write in flight may be lost or completed; nothing older is lost.
        assert seq in (written[-1], written[-1] + 1), f"cycle {cycle}: {seq} after {written[-1]}"
        assert device.slot == ("B" if seq % 2 else "A"), f"cycle {cycle}"
        assert env["upgrade_available"] == "0"
        assert data_marker(device) == "survives"
    assert written[-1] > 2 * CYCLES  # the cuts did land among many writes
    torn = re.findall(r"copy[12] valid=0", device.log_path.read_text())
    print(f"{len(torn)} of {CYCLES} power-ons found a torn environment copy")
