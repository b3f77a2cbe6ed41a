"""The campaign's plan and report, without a device (the runs: tests/integration/e2e)."""
import collections
import random
import re

from testkit.campaign import (
    FAILING,
    ROLLBACK_STATES,
    STATES,
    Campaign,
    Outcome,
    Point,
    Run,
    keeping_other_sections,
    reliability_report,
    single_cuts,
)


def test_single_cuts_spread_evenly_over_states_and_the_write():
    runs = single_cuts(26, random.Random(1))
    buckets = collections.Counter(run.points[0].bucket for run in runs)
    assert buckets == {bucket: 2 for bucket in [*STATES, "write"]}
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


def test_report_counts_cuts_and_outcomes():
    campaign = Campaign(server=None, device=None, images=None)
    campaign.outcomes = [
        Outcome(Run("", [Point("Sync")]), "release-2", "ok", cut=["Sync"], status="success"),
        Outcome(Run("", [Point(write=40)]), "release-1", "inconsistent", cut=["write 40%"],
                status="failure", problems=["server: failure, device runs release-1"]),
        Outcome(Run("", [Point("Sync")]), "release-2", "ok", cut=["Download"],
                status="failure"),  # the delay took the cut past Sync
    ]
    report = reliability_report(campaign, "abc1234", seed=7, seconds=120)
    assert "`make campaign N=3` on " in report and "commit `abc1234`, seed 7: 3 of 3 runs" in report
    assert "| Sync | 1 | 1 | 1 | 0 |" in report and "| write | 1 | 0 | 0 | 1 |" in report
    assert "| Download | 1 | 1 | 0 | 1 |" in report
    assert "cuts that landed past the point they waited for: 1" in report
    assert "**inconsistent reports** (status, inventory or boot environment against the " \
           "running release): 1" in report
    assert "release-1, cut at write 40%: **inconsistent**" in report


def test_a_new_report_keeps_the_sections_other_results_wrote():
    previous = ("# Reliability: power cuts\n\nold counts\n\n## Failures\n\nNone.\n\n"
                "## Hangs: the watchdog rollback\n\n70 s\n")
    kept = keeping_other_sections("# Reliability: power cuts\n\nnew counts\n", previous)
    assert kept == ("# Reliability: power cuts\n\nnew counts\n\n"
                    "## Hangs: the watchdog rollback\n\n70 s\n")
    assert keeping_other_sections("new\n", "") == "new\n"
