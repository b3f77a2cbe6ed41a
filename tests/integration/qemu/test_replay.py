"""Flush-point replay of a real install on the emulated device, a small seeded sample:
`tern-updater install --auto-reboot` of release-2 recorded with every disk write logged,
then crash states of it powered on and checked (`make replay` boots them all)."""
import subprocess

import pytest

from qemu.replay import CrashState, read_log, replay, write_overlay
from testkit.http_files import serve_directory
from testkit.replay import record_standalone

pytestmark = pytest.mark.qemu

SEED = 16


def test_crash_states_of_an_install_boot_to_a_committed_slot(base_image, tmp_path):
    work = tmp_path / "install"
    with serve_directory(base_image.directory) as url:
        recording = record_standalone(base_image.directory, work, "release-2", url, "install")
    log = read_log(recording.log)
    # The log rebuilds the disk QEMU wrote: its end state over the base is the recorded disk.
    end = write_overlay(log, CrashState("end", "end", len(log.writes)), recording.base,
                        tmp_path / "end.qcow2")
    subprocess.run(["qemu-img", "compare", "-q", str(end), str(work / "recorded.qcow2")],
                   check=True)

    report = replay(recording, base_image.layout, base_image.directory, seed=SEED, limit=2)
    print(report.to_json())
    assert report.flush_points > 20  # the update's fsyncs, each a flush of the disk
    assert report.states > report.flush_points
    assert len(report.groups) < report.states  # identical states share a boot
    assert len(report.booted) == 2
    assert not report.failures, [b.verdict.problems for b in report.failures]
