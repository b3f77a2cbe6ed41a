"""The campaign's plan and report, without a device (the runs: tests/integration/e2e)."""
import collections
import random
import re

from testkit.campaign import (
    FAILING,
    ROLLBACK_STATES,
    STATES,
    Outcome,
    Parallel,
    Point,
    Run,
    keeping_other_sections,
    reliability_report,
    weighted_cuts,
    where_cut,
)


def test_cuts_are_weighted_toward_the_write_windows_and_reach_every_state():
    runs = weighted_cuts(200, random.Random(1))
    buckets = collections.Counter(run.points[0].bucket for run in runs)
    assert len(runs) == 200 and set(buckets) == {*STATES, "write"}
    assert buckets["write"] == 59  # 1 + 187 * 8/26, rounded by the largest remainders
    for state in ("ArtifactInstall", "ArtifactCommit", "ArtifactRollback"):  # env writes
        assert buckets[state] in (22, 23)
    assert all(buckets[state] in (8, 9) for state in STATES if state not in
               ("ArtifactInstall", "ArtifactCommit", "ArtifactRollback"))
    assert [run.points[0].bucket for run in runs[:13]] != [*STATES, "write"]  # shuffled
    assert weighted_cuts(200, random.Random(1)) == runs  # seeded
    assert len(weighted_cuts(5, random.Random(1))) == 5
    for run in runs:
        (point,) = run.points
        if point.bucket in ROLLBACK_STATES:
            assert run.release in FAILING  # only a failing release gets there
        else:
            assert run.release == ""  # the good release the device is not running
        if point.write:
            assert point.write in range(10, 100, 10)


def test_markers_match_only_their_own_line():
    rollback = re.compile(Point("ArtifactRollback").pattern)
    assert rollback.search("tern-state: ArtifactRollback\r\n")
    assert not rollback.search("tern-state: ArtifactRollbackReboot\r\n")
    assert not re.search(Point(write=10).pattern, "tern-write: 100%")


def test_where_a_cut_landed_is_the_last_marker_before_it():
    write = Point(write=30)
    assert where_cut("\r\ntern-written: 3145728\r\ntern-written: 4194304\r\n", write) == \
        "write at byte 4194304"
    assert where_cut("tern-written: 4194304\r\ntern-state: ArtifactInstall\r\n", write) == \
        "ArtifactInstall"
    assert where_cut("\r\n", Point("Cleanup")) == "Cleanup"  # nothing after its own marker
    assert where_cut("tern-written: 12", Point("Download")) == "Download"  # a torn line


def test_report_counts_cuts_misses_and_outcomes():
    outcomes = [
        Outcome(Run("", [Point("Sync")]), "release-2", "ok", cut=["Sync"], status="success"),
        Outcome(Run("", [Point(write=40)]), "release-1", "inconsistent",
                cut=["write at byte 5242880"], status="failure",
                problems=["server: failure, device runs release-1"]),
        Outcome(Run("", [Point("Sync")]), "release-2", "ok", cut=["Download"],
                status="failure"),  # the delay took the cut past Sync: a miss
        Outcome(Run("", [Point("Cleanup")]), "release-1", "ok", missed=["Cleanup"],
                status="success"),
    ]
    assert [outcome.misses for outcome in outcomes] == [0, 0, 1, 1]
    report = reliability_report(outcomes, "abc1234", seed=7, seconds=120, planned=5, parallel=2)
    assert "`make campaign N=5 PARALLEL=2` on " in report
    assert "commit `abc1234`, seed 7: 4 of 5 runs done in 2 min on 2 emulated devices" in report
    assert "| Sync | 2 | 1 | 1 | 1 | 0 |" in report and "| write | 1 | 1 | 0 | 0 | 1 |" in report
    assert "| Download | 0 | 1 | 1 | 0 | 1 |" in report and "| Cleanup | 1 | 0 |" in report
    assert "cuts made: 3; **misses**: 2 (1 points never reached, 1 cuts that landed in " \
           "another window than planned)" in report
    assert "cuts in the slot write: 1, at slot offsets 5–5 MiB" in report
    assert "**inconsistent reports** (status, inventory or boot environment against the " \
           "running release): 1" in report
    assert "release-1, cut at write at byte 5242880: **inconsistent**" in report


def test_the_devices_share_one_plan_until_a_brick_or_the_time_stops_it():
    runs = [Run("", [Point("Sync")]), Run("", [Point("Cleanup")]), Run("", [Point("Sync")])]
    shared = Parallel(list(runs), stop_at=float("inf"))
    assert shared.next_run() is runs[0] and shared.next_run() is runs[1]
    assert shared.done(Outcome(runs[0], "release-2", "brick", device="device-2")) == 1
    assert shared.next_run() is None and shared.stopped == "device-2 bricked"
    late = Parallel(list(runs), stop_at=0.0)
    assert late.next_run() is None and late.stopped == "time is up"


def test_a_new_report_keeps_the_sections_other_results_wrote():
    previous = ("# Reliability: power cuts\n\nold counts\n\n## Failures\n\nNone.\n\n"
                "## Hangs: the watchdog rollback\n\n70 s\n")
    kept = keeping_other_sections("# Reliability: power cuts\n\nnew counts\n", previous)
    assert kept == ("# Reliability: power cuts\n\nnew counts\n\n"
                    "## Hangs: the watchdog rollback\n\n70 s\n")
    assert keeping_other_sections("new\n", "") == "new\n"
