"""Power cuts during over-the-air updates (testkit/campaign.py): one device, a real server,
QEMU killed at a seeded sample of the updater's states, at least one of each family, and
in the middle of the rootfs write.

To fit CI, a deployment takes several cuts in turn: each power-on goes on from where the
last cut left it (a resume, a U-Boot fallback, a rollback) and the next cut lands in what
it does. The families: the download, the write and the install of a good release, which
go on to success (the campaign's check; the write resumes from its last checkpoint); the
trial boot of a failing release and its rollback; the commit of a good release and what
follows it. Every state, weighted toward the write windows, is `make campaign`'s. The
seed is printed; TERN_SEED=<seed> repeats the sample.
"""
import os
import random
import re
import time

import pytest

from testkit.admin import ServerAdmin
from testkit.campaign import FAILING, Campaign, Point, Run
from testkit.live_server import LiveServer

pytestmark = pytest.mark.qemu


def sample(rng: random.Random) -> list[Run]:
    """Three deployments, one cut in each state family they pass (S: a point at a state)."""
    S, pick = Point, rng.choice
    return [
        # a good release: its download, its write and its install go on to success
        Run("", [S(pick(["Sync", "Download"])),
                 Point(write=rng.randrange(30, 80, 10), delay=rng.uniform(0, 1)),
                 S("ArtifactInstall")]),
        # broken (the trial boot panics, U-Boot falls back) or unhealthy (the health
        # check fails): the trial boot, then the rollback, go on after each cut
        Run(pick(FAILING), [S(pick(["ArtifactReboot", "ArtifactVerifyReboot"])),
                            S(pick(["ArtifactRollback", "ArtifactRollbackReboot",
                                    "ArtifactVerifyRollbackReboot", "ArtifactFailure"]))]),
        # a good release, after its trial boot: the commit and what follows it
        Run("", [S("ArtifactCommit"), S(pick(["Cleanup", "UpdateStatusReport"]))]),
    ]


@pytest.fixture
def campaign(tmp_path, make_device, base_image):
    with LiveServer(tmp_path / "server", names=("10.0.2.2",)) as live:
        campaign = Campaign(ServerAdmin(live), make_device(), base_image.directory,
                            tmp_path / "failures")
        campaign.enroll()
        yield campaign


def test_power_cuts_in_each_state_family_and_during_the_write(campaign):
    seed = int(os.environ.get("TERN_SEED", time.time_ns() % 1_000_000))
    print(f"TERN_SEED={seed}")
    for run in sample(random.Random(seed)):
        outcome = campaign.run(run)
        print(f"{outcome.release}: aimed at {[point.label for point in run.points]}, cut at "
              f"{', '.join(outcome.cut)}; missed {outcome.missed or 'none'} -> "
              f"{outcome.status}, {outcome.kind}, slot {outcome.slot} {outcome.running}, "
              f"{outcome.seconds:.0f} s {outcome.problems}")
        assert outcome.kind == "ok", outcome.problems
    first = campaign.outcomes[0]
    # The cut in the write landed there, and the download resumed from the last checkpoint
    # before it (HTTP Range from a gzip member's start), not from byte 0.
    write = [re.fullmatch(r"write at byte (\d+)", cut) for cut in first.cut]
    assert any(write), first.cut
    cut_at = int(next(match for match in write if match)[1])
    log = "\n".join(campaign.server.device_log(first.deployment, campaign.device_id))
    resumed = re.search(r"resuming the download at byte \d+: slot [ab] keeps (\d+) of (\d+)",
                        log)
    assert resumed, log
    kept, size = int(resumed[1]), int(resumed[2])
    assert cut_at - (17 << 20) <= kept < size  # a checkpoint each 16 MiB, a write at most
