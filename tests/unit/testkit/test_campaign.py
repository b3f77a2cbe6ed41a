"""The campaign's plan and report, without a device (the runs: tests/integration/e2e)."""
import collections
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from artifact import ArtifactReader
from artifact.block_index import IndexAnchor
from artifact.signing import load_key_file
from testkit.campaign import (
    DELTA_GOOD,
    DELTA_HEADING,
    FAILING,
    GOOD,
    ROLLBACK_STATES,
    STATES,
    Campaign,
    Outcome,
    Parallel,
    Point,
    Run,
    indexed_artifacts,
    keeping_other_sections,
    next_in_turn,
    not_adaptive,
    reliability_report,
    replacing_delta_section,
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


def test_the_good_releases_go_in_turn():
    assert [next_in_turn(GOOD, running) for running in GOOD] == ["release-2", "release-1"]
    # three for --delta: the target slot then never holds the release it gets
    assert [next_in_turn(DELTA_GOOD, running) for running in DELTA_GOOD] == \
        ["release-1-package", "release-1-config", "release-1"]
    assert next_in_turn(DELTA_GOOD, "release-2") == "release-1"  # runs none of them


def test_delta_report_counts_the_installs_that_went_adaptive():
    outcomes = [
        Outcome(Run("", [Point(write=30)]), "release-1-package", "ok",
                cut=["write at byte 9437184"], status="success", download="adaptive"),
        Outcome(Run("", [Point("Sync")]), "release-1-config", "not-adaptive", cut=["Sync"],
                status="success", download="full",
                problems=["not an adaptive install: download stats full"]),
        Outcome(Run("release-broken", [Point("ArtifactRollback")]), "release-broken", "brick",
                cut=["ArtifactRollback"], problems=["no shell"]),
    ]
    report = reliability_report(outcomes, "abc1234", seed=3, seconds=60, planned=4,
                                parallel=2, delta=True)
    assert report.startswith(DELTA_HEADING + "\n\n`make campaign DELTA=1 N=4 PARALLEL=2` on ")
    assert "**adaptive installs** (the deployment log's download stats): 1 of 3 runs; full " \
           "installs (a fallback inside the install): 1; no download stats: 1; **not " \
           "adaptive** (counted only when nothing worse): 1" in report
    assert "the others with the good releases in turn." in report
    assert "\n### Failures\n" in report and "\n## Failures" not in report
    assert "release-1-config, cut at Sync: **not-adaptive**: not an adaptive install" in report
    full = reliability_report(outcomes, "abc1234", seed=3, seconds=60)
    assert "adaptive installs" not in full and "release-1 / release-2 in turn." in full


def test_the_delta_section_replaces_its_last_version_and_keeps_every_other():
    campaign = "# Reliability: power cuts\n\ncounts\n\n## Failures\n\nNone.\n"
    hangs = "## Hangs: the watchdog rollback\n\n70 s\n"
    first = replacing_delta_section(f"{DELTA_HEADING}\n\nold\n\n### Failures\n\nNone.\n",
                                    campaign + "\n" + hangs)
    assert first == (campaign + "\n" + hangs + "\n" + DELTA_HEADING
                     + "\n\nold\n\n### Failures\n\nNone.\n")
    moved = first.replace(hangs + "\n", "") + "\n" + hangs  # another section after it
    again = replacing_delta_section(f"{DELTA_HEADING}\n\nnew\n", moved)
    assert again == campaign + "\n" + DELTA_HEADING + "\n\nnew\n\n" + hangs
    assert replacing_delta_section("x\n", "") == "x\n"
    # and the full campaign's report keeps the delta section
    assert DELTA_HEADING + "\n\nnew" in keeping_other_sections("# Reliability\n\nn\n", again)


def fake_images(tmp_path, keys) -> Path:
    images = tmp_path / "images"
    (images / "keys").mkdir(parents=True)
    shutil.copyfile(keys["ecdsa"].private_path, images / "keys" / "artifact.key")
    (images / "layout.json").write_text(json.dumps(
        {"device_type": "qemu-arm64", "keys": {"artifact": "keys/artifact.key"}}))
    for number, name in enumerate(("release-1", *FAILING)):
        (images / f"{name}.ext4").write_bytes(random.Random(number).randbytes(256 << 10))
    return images


def test_delta_artifacts_are_written_with_a_block_index_and_the_pairs_linked(tmp_path, keys):
    images = fake_images(tmp_path, keys)
    for name in DELTA_GOOD[1:]:
        (images / f"{name}.mender").write_bytes(b"made by make delta-images")
    out = indexed_artifacts(images, tmp_path / "indexed")
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{name}.mender" for name in (*DELTA_GOOD, *FAILING))
    for name in ("release-1", *FAILING):
        with open(out / f"{name}.mender", "rb") as stream, \
                ArtifactReader(stream, [load_key_file(keys["ecdsa"].public_path)]) as reader:
            assert reader.header.name == name
            assert reader.header.device_types == ["qemu-arm64"]
            assert IndexAnchor.from_payload(reader.header.payloads[0]) is not None
    assert (out / "release-1-package.mender").read_bytes() == b"made by make delta-images"


def test_delta_artifacts_need_the_delta_pairs(tmp_path, keys):
    with pytest.raises(SystemExit, match="run `make delta-images`"):
        indexed_artifacts(fake_images(tmp_path, keys), tmp_path / "indexed")


def test_an_install_that_did_not_go_adaptive_says_why():
    log = ["adaptive install into slot B (/dev/vda3); running A",
           "adaptive install: the server answered 200 OK to a Range request; downloading the "
           "full artifact", "download stats {\"mode\": \"full\"}"]
    assert not_adaptive("full", log) == (
        "not an adaptive install: download stats full (adaptive install: the server answered "
        "200 OK to a Range request; downloading the full artifact)")
    assert not_adaptive("", []) == "not an adaptive install: download stats none"


class Server:
    """What Campaign.check_download asks the server: the deployment's device rows and log."""

    def __init__(self, download: dict | None, log: list[str]):
        self.download, self.messages = download, log

    def get(self, path: str) -> list[dict]:
        assert path == "/deployments/d1/devices"
        return [{"device_id": "other", "download": {"mode": "adaptive"}},
                {"device_id": "dev", "download": self.download}]

    def device_log(self, deployment: str, device: str) -> list[str]:
        return self.messages


@pytest.mark.parametrize("download, kind", [({"mode": "adaptive"}, "ok"),
                                            ({"mode": "full"}, "not-adaptive"),
                                            (None, "not-adaptive")])
def test_a_delta_campaign_counts_a_run_that_did_not_go_adaptive(tmp_path, download, kind):
    fallback = "adaptive install: the artifact has no block index; downloading the full artifact"
    campaign = Campaign(Server(download, [fallback]), None, tmp_path, indexed=tmp_path)
    campaign.device_id = "dev"
    outcome = Outcome(Run("", [Point("Sync")]), "release-1-package", "ok", "d1")
    campaign.check_download(outcome)
    assert (outcome.download, outcome.kind) == ((download or {}).get("mode", ""), kind)
    assert outcome.problems == ([] if kind == "ok" else [not_adaptive(outcome.download,
                                                                       [fallback])])
    worse = Outcome(Run("", [Point("Sync")]), "release-1-package", "lost-data", "d1")
    campaign.check_download(worse)
    assert worse.kind == "lost-data"  # the worse kind stays
    full = Campaign(Server({"mode": "full"}, []), None, tmp_path)  # the full campaign
    full.device_id = "dev"
    plain = Outcome(Run("", [Point("Sync")]), "release-2", "ok", "d1")
    full.check_download(plain)
    assert (plain.download, plain.kind, plain.problems) == ("full", "ok", [])
