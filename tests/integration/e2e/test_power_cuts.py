"""Power cuts during over-the-air updates (testkit/campaign.py): one device, a real server,
QEMU killed at every named updater state and at random points of the rootfs write.

To fit CI, a deployment takes several cuts in turn: each power-on goes on from where the
last cut left it (a resume, a U-Boot fallback, a rollback) and the next cut lands in what
it does. A good release cut in its download, write or install still ends in success (the
campaign's check); a cut during the rootfs write resumes from the last checkpoint.
A cut counts under the last state announced before it; a state that a drifting
cut went past gets a run of its own. The seed of the random points is printed;
TERN_SEED=<seed> repeats them.
"""
import os
import random
import re
import time

import pytest

from testkit.admin import ServerAdmin
from testkit.campaign import STATES, Campaign, Point, Run, aimed_at
from testkit.live_server import LiveServer

pytestmark = pytest.mark.qemu


def sample(rng: random.Random) -> list[Run]:
    def write() -> Point:
        return Point(write=rng.randrange(10, 100, 10), delay=rng.uniform(0, 1))

    S = Point  # a point at a state: S("Download")
    return [
        # a good release: the download, the write and the install go on to success
        Run("", [S("Sync"), S("Download"), write(), S("ArtifactInstall"), S("Cleanup")]),
        # unhealthy: the health check fails and the rollback goes on after each cut
        Run("release-unhealthy", [S("ArtifactRollback"), S("ArtifactVerifyRollbackReboot"),
                                  S("ArtifactFailure")]),
        # broken: the trial boot panics and U-Boot falls back; resume goes on from there
        Run("release-broken", [S("ArtifactReboot"), S("ArtifactVerifyReboot"),
                               S("ArtifactRollbackReboot"), S("UpdateStatusReport")]),
        Run("", [S("ArtifactCommit"), S("Cleanup")]),
        Run("", [write(), S("UpdateStatusReport")]),
    ]


@pytest.fixture
def campaign(tmp_path, make_device, base_image):
    with LiveServer(tmp_path / "server", names=("10.0.2.2",)) as live:
        campaign = Campaign(ServerAdmin(live), make_device(), base_image.directory,
                            tmp_path / "failures")
        campaign.enroll()
        yield campaign


def test_power_cuts_at_every_state_and_during_the_write(campaign):
    seed = int(os.environ.get("TERN_SEED", time.time_ns() % 1_000_000))
    print(f"TERN_SEED={seed}")
    runs = sample(random.Random(seed))
    for _ in range(3):  # the sample, then runs aimed at states a drifting cut went past
        for run in runs:
            outcome = campaign.run(run)
            print(f"{outcome.release}: cut at {', '.join(outcome.cut)}; missed "
                  f"{outcome.missed or 'none'} -> {outcome.status}, {outcome.kind}, slot "
                  f"{outcome.slot} {outcome.running}, {outcome.seconds:.0f} s "
                  f"{outcome.problems}")
            assert outcome.kind == "ok", outcome.problems
        cut = {label for outcome in campaign.outcomes for label in outcome.cut}
        runs = [aimed_at(state) for state in STATES if state not in cut]
    assert not runs, f"never cut at {[run.points[0].state for run in runs]}"
    missed = [label for outcome in campaign.outcomes for label in outcome.missed]
    assert not [label for label in missed if label.startswith("write")]


def test_a_cut_during_the_rootfs_write_resumes_to_success(campaign):
    """QEMU killed in the middle of the rootfs write of a daemon deployment: after power-on
    the daemon goes on from the last checkpoint (HTTP Range from a gzip member's start) and
    the deployment ends in success."""
    outcome = campaign.run(Run("", [Point(write=50, delay=0.5)]))
    assert outcome.cut == ["write 50%"], outcome.cut
    assert (outcome.kind, outcome.status) == ("ok", "success"), outcome.problems
    log = "\n".join(campaign.server.device_log(outcome.deployment, campaign.device_id))
    resumed = re.search(r"resuming the download at byte \d+: slot [ab] keeps (\d+) of (\d+)",
                        log)
    assert resumed, log
    kept, size = int(resumed[1]), int(resumed[2])
    assert 0.3 * size <= kept < size  # a checkpoint at most 16 MiB (and a write) before the cut
    assert "downloading again from the start" not in log
