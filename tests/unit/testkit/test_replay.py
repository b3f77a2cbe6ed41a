"""The resumable replay's bookkeeping, without QEMU: the results file, which groups a run
boots, the refusal of a stale recording, the report, and RELIABILITY.md's section.

The recordings are built by hand (a 16-sector base disk, a write log in the dm-log-writes
format QEMU writes); only the boot of a state is replaced (it needs QEMU)."""
import json
import re
import struct
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import qemu.replay
import testkit.live_server
import testkit.replay
from qemu.device import free_port
from qemu.replay import FLUSH, MAGIC, Boot, Expectations, Group, Recording, Verdict, boot_all
from testkit.replay import (
    DELTA_ABOUT,
    HEADING,
    IMAGE_FILES,
    RESULTS,
    NotAdaptive,
    Result,
    Results,
    StaleRecording,
    adaptive_stats,
    image_digests,
    image_files,
    kept_recording,
    main,
    record,
    record_standalone,
    replacing_section,
    to_boot,
)

SECTOR = 512
OTHERS = "# Reliability\n\ncampaign\n\n## Failures\n\nNone.\n\n## Hangs\n\nwatchdog\n"
LAYOUT = {"key": "k", "partitions": {"boot": {"offset": 0, "size": 8 * SECTOR},
                                     "data": {"offset": 8 * SECTOR, "size": 8 * SECTOR}}}


def result(group: str, ok: bool = True, recording: str = "rec1", **more) -> Result:
    return Result(**{"scenario": "install", "recording": recording, "group": group,
                     "state": f"flush point {group}", "stands_for": 2, "ok": ok,
                     "problems": [] if ok else ["no shell"], "seconds": 40.0,
                     "commit": "abc1234", "finished": "2026-11-30T12:00:00+00:00", **more})


def write_log(path: Path, writes: list[tuple[int, int]]) -> Path:
    """A blklogwrites log: each (sector, byte) written and flushed."""
    entries = b""
    for at, byte in writes:
        entries += struct.pack("<QQQQ", at, 1, 0, 0).ljust(SECTOR, b"\0") + bytes([byte]) * SECTOR
        entries += struct.pack("<QQQQ", 0, 0, FLUSH, 0).ljust(SECTOR, b"\0")
    superblock = struct.pack("<QQQI", MAGIC, 1, 2 * len(writes), SECTOR).ljust(SECTOR, b"\0")
    path.write_bytes(superblock + entries)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    images = tmp_path / "images"
    (images / "keys").mkdir(parents=True)
    for name in IMAGE_FILES:
        (images / name).write_text(json.dumps(LAYOUT) if name == "layout.json" else name)
    return images


@pytest.fixture
def delta_images(images) -> Path:
    """The images with the delta scenario's artifact (make delta-images)."""
    (images / "release-1-package.mender").write_bytes(bytes(range(256)) * 4)
    return images


def make_recording(workdir: Path, scenario: str, images: Path, recording_id: str = "rec1",
                   made_with: dict | None = None) -> Recording:
    """Five flush points and five partial epochs; six distinct states (a boot sector
    written then put back: that flush point's boot region is the base's again)."""
    directory = workdir / scenario
    directory.mkdir(parents=True)
    (directory / "base.raw").write_bytes(bytes(16 * SECTOR))
    log = write_log(directory / "writes.log", [(9, 1), (1, 2), (10, 3), (1, 0), (11, 4)])
    if made_with is None:
        made_with = {"commit": "abc1234", "images": image_digests(images, image_files(scenario))}
    recording = Recording(directory, directory / "base.raw", log, 0,
                          Expectations(("release-1", "release-2"), {}), scenario,
                          {**made_with, "id": recording_id})
    recording.save()
    return recording


# -- the results file ------------------------------------------------------------------------

def test_results_are_appended_one_line_each_and_read_back(tmp_path):
    results = Results(tmp_path / RESULTS)
    results.append(result("g1"))
    results.append(result("g2", ok=False))
    assert results.read() == [result("g1"), result("g2", ok=False)]
    assert len((tmp_path / RESULTS).read_text().splitlines()) == 2


def test_a_line_a_cut_left_torn_is_ignored_and_the_next_one_starts_afresh(tmp_path):
    results = Results(tmp_path / RESULTS)
    results.append(result("g1"))
    with open(tmp_path / RESULTS, "a") as file:
        file.write('{"scenario": "install", "grou')
    results.append(result("g2"))
    assert [r.group for r in results.read()] == ["g1", "g2"]


def test_the_latest_result_of_each_group_of_one_recording_counts(tmp_path):
    results = Results(tmp_path / RESULTS)
    for line in (result("g1", ok=False), result("g1"), result("g2", recording="old"),
                 result("g3", scenario="daemon")):
        results.append(line)
    latest = results.latest("install", "rec1")
    assert list(latest) == ["g1"] and latest["g1"].ok


def test_groups_with_a_result_are_skipped_failed_ones_retried_on_request():
    groups = [Group((("boot", str(n)),), []) for n in range(4)]
    latest = {groups[0].digest: result(groups[0].digest),
              groups[2].digest: result(groups[2].digest, ok=False)}
    assert to_boot(groups, latest) == [groups[1], groups[3]]
    assert to_boot(groups, latest, retry_failed=True) == groups[1:]
    assert groups[0].digest == Group((("boot", "0"),), []).digest  # the same across runs
    assert groups[0].digest != groups[1].digest


# -- recordings kept across runs -----------------------------------------------------------

def test_a_recording_made_with_the_same_images_is_kept(tmp_path, images):
    make_recording(tmp_path, "install", images)
    kept = kept_recording(tmp_path / "install", image_digests(images))
    assert kept.made_with["id"] == "rec1" and kept.log == tmp_path / "install" / "writes.log"


def test_a_recording_made_with_other_images_is_refused(tmp_path, images):
    make_recording(tmp_path, "install", images)
    (images / "release-2.mender").write_text("rebuilt")
    with pytest.raises(StaleRecording, match=r"commit abc1234 .*release-2\.mender changed.*"
                                             r"--fresh-recording"):
        kept_recording(tmp_path / "install", image_digests(images))


def test_a_recording_without_image_digests_is_refused(tmp_path, images):
    make_recording(tmp_path, "install", images, made_with={})
    with pytest.raises(StaleRecording, match="older testkit.replay"):
        kept_recording(tmp_path / "install", image_digests(images))


def test_a_recording_cut_before_it_was_saved_is_removed(tmp_path, images):
    (tmp_path / "install").mkdir()
    (tmp_path / "install" / "writes.log").write_bytes(b"half")
    assert kept_recording(tmp_path / "install", image_digests(images)) is None
    assert not (tmp_path / "install").exists()


def test_the_command_refuses_a_stale_recording_in_one_line(tmp_path, images, capsys):
    make_recording(tmp_path / "work", "install", images)
    (images / "disk.img").write_text("rebuilt")
    code = main(["--workdir", str(tmp_path / "work"), "--images", str(images),
                 "--scenarios", "install", "--reliability", str(tmp_path / "R.md")])
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert "disk.img changed" in error and "Traceback" not in error
    assert not (tmp_path / "work" / RESULTS).exists()


# -- booting: resumed, parallel, within a time budget ---------------------------------------

@pytest.fixture
def booted(monkeypatch):
    """Replaces the boot of a state (QEMU): records the groups booted; a group whose
    first state is the 4th flush point fails."""
    calls: list[str] = []

    def fake_boot(job: Boot, images, name, update_urls=None) -> Verdict:
        calls.append(job.group.digest)
        verdict = Verdict(slot="A", release="release-1", seconds=1.0)
        if job.group.representative.label.startswith("flush point 4 "):
            verdict.fail("no shell within 240 s")
        if job.fresh_update:
            verdict.updated_to = "release-2"
        return verdict

    monkeypatch.setattr(qemu.replay, "boot", fake_boot)
    return calls


def run_replay(tmp_path, images, *more) -> int:
    return main(["--workdir", str(tmp_path / "work"), "--images", str(images), "--reliability",
                 str(tmp_path / "RELIABILITY.md"), "--fresh-updates", "1", *more])


def test_a_run_again_boots_only_the_groups_without_a_result(tmp_path, images, booted, capsys):
    for scenario in ("install", "rollback"):
        make_recording(tmp_path / "work", scenario, images)
    args = ("--scenarios", "install", "rollback")
    assert run_replay(tmp_path, images, *args, "--limit", "2") == 0
    first = list(booted)
    assert len(first) == 4  # 2 per scenario
    assert run_replay(tmp_path, images, *args) == 1  # the 4th flush point fails
    assert len(booted) == 12 and not set(first) & set(booted[4:])
    assert run_replay(tmp_path, images, *args) == 1
    assert len(booted) == 12  # nothing left
    lines = Results(tmp_path / "work" / RESULTS).read()
    assert len(lines) == 12 and sum(r.updated_to == "release-2" for r in lines) == 2
    assert all(r.recording == "rec1" and r.seconds == 1.0 for r in lines)
    run_replay(tmp_path, images, *args, "--retry-failed")
    assert len(booted) == 14  # the failed group of each scenario, again
    capsys.readouterr()


def test_no_boot_starts_once_the_time_is_up(tmp_path, images, booted):
    make_recording(tmp_path / "work", "install", images)
    assert run_replay(tmp_path, images, "--scenarios", "install", "--minutes", "0") == 0
    assert booted == [] and Results(tmp_path / "work" / RESULTS).read() == []


def test_boots_run_on_parallel_devices_and_stop_at_the_deadline(monkeypatch):
    running, most, names = [0], [0], set()
    lock = threading.Lock()

    def fake_boot(job, images, name, update_urls=None) -> Verdict:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            names.add(name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return Verdict()

    monkeypatch.setattr(qemu.replay, "boot", fake_boot)
    jobs = [Boot(None, None, Group((("boot", str(n)),), [])) for n in range(6)]
    done = []
    assert len(boot_all(jobs, Path("images"), parallel=2,
                        done=lambda job, verdict: done.append(job))) == 6
    assert most[0] == 2 and names == {"replay-1", "replay-2"}
    assert sorted(j.group.key for j in done) == sorted(j.group.key for j in jobs)
    stop_at = time.monotonic() + 0.07  # after the first two boots began
    assert len(boot_all(jobs, Path("images"), parallel=2, stop_at=stop_at)) < 6


def test_jobs_of_one_exclusive_key_never_boot_at_once_and_the_others_go_beside_them(
        monkeypatch):
    """The daemon states need one server port: while one boots, the other device takes
    the next job that may start instead of waiting for it."""
    running, overlapped, order = set(), [], []
    lock = threading.Lock()

    def fake_boot(job, images, name, update_urls=None) -> Verdict:
        with lock:
            if job.exclusive and job.exclusive in running:
                overlapped.append(job.group.key)
            running.add(job.exclusive)
            order.append(job.exclusive or "other")
        time.sleep(0.2 if job.exclusive else 0.05)
        with lock:
            running.discard(job.exclusive)
        return Verdict()

    monkeypatch.setattr(qemu.replay, "boot", fake_boot)
    jobs = [Boot(None, None, Group((("boot", str(n)),), []),
                 exclusive="port 28304" if n < 3 else "") for n in range(9)]
    started = time.monotonic()
    assert len(boot_all(jobs, Path("images"), parallel=2)) == 9
    assert overlapped == []
    # 3 exclusive boots of 0.2 s one after the other, the 6 others (0.3 s) beside them
    assert time.monotonic() - started < 0.8
    assert order[:2] == ["port 28304", "other"]


# -- the report -------------------------------------------------------------------------------

def test_the_report_counts_what_was_booted_and_what_is_left(tmp_path, images, booted, capsys):
    make_recording(tmp_path / "work", "install", images)
    run_replay(tmp_path, images, "--scenarios", "install", "--limit", "3")
    capsys.readouterr()
    assert main(["--workdir", str(tmp_path / "work"), "--images", str(images),
                 "--report"]) == 0
    out = capsys.readouterr().out
    # 10 log entries, 5 flush points, 10 states (the flush points and the partial epochs)
    assert "| install | 10 | 5 | 10 | 6 | 3 |" in out
    assert "| rollback | not recorded yet |" in out and "| daemon | not recorded yet |" in out
    failed = [r for r in Results(tmp_path / "work" / RESULTS).read() if not r.ok]
    assert f"| 3 | {len(failed)} | 1 | 3 |" in out  # booted, failures, fresh updates, left
    assert ("Failures: none." in out) == (not failed)
    section = (tmp_path / "RELIABILITY.md").read_text()
    assert section.startswith(HEADING) and "3 boots from 20" in section
    assert "| install | 10 | 5 | 10 | 6 | 3 |" in section and "make replay MINUTES=" in section
    assert "Still to boot: 3 distinct states (`make replay` continues)." in section


def test_the_section_is_added_then_replaced_in_place():
    added = replacing_section(f"{HEADING}\n\nfirst\n", OTHERS)
    assert added == OTHERS + f"\n{HEADING}\n\nfirst\n"
    moved = added.replace("## Hangs\n\nwatchdog\n", "") + "\n## Hangs\n\nwatchdog\n"
    replaced = replacing_section(f"{HEADING}\n\nsecond\n", moved)
    assert "first" not in replaced and "second" in replaced
    assert replaced.index("second") < replaced.index("## Hangs") and "watchdog" in replaced
    assert replaced.startswith(OTHERS.split("## Hangs")[0])


# -- the delta scenario -----------------------------------------------------------------------

ADAPTIVE = ('tern-updater: adaptive install into slot b (/dev/vda3); 12 of 3072 chunks\r\n'
            'tern-updater: download stats {"mode": "adaptive", "fetched": 2621440, '
            '"full": 71303168}\r\n')
FULL = ("tern-updater: adaptive install: the server answered 200 to a Range request; "
        "downloading the full artifact\r\n"
        'tern-updater: download stats {"mode": "full", "fetched": 71368704, '
        '"full": 71303168}\r\n')


def test_an_adaptive_install_gives_its_download_stats():
    assert adaptive_stats(ADAPTIVE) == {"mode": "adaptive", "fetched": 2621440,
                                        "full": 71303168}


def test_a_full_install_or_none_is_not_adaptive_with_the_reason():
    with pytest.raises(NotAdaptive, match=r'"mode": "full".*answered 200 to a Range request'):
        adaptive_stats(FULL)
    with pytest.raises(NotAdaptive, match="download stats none"):
        adaptive_stats("tern-updater: install of release-1-package: done\r\n")


class FakeConsole:
    """The serial console of a recorded install: prints `output`, then its exit code."""

    def __init__(self, output: str):
        self.output, self.sent = output, []
        self.pexpect = self

    def sendline(self, line: str) -> None:
        self.sent.append(line)

    def expect(self, pattern, deadline) -> int:
        self.before, self.match = self.output, re.match(pattern, "install exit 0")
        return 0


class FakeDevice:
    def __init__(self, output: str):
        self.console, self.closed = FakeConsole(output), False

    def run_check(self, command: str, timeout: float = 30) -> str:
        return ""

    def expect_reboot(self, timeout: float | None = None) -> str:
        return "B"

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def recorded(monkeypatch):
    """record_standalone without QEMU: the device a FakeDevice printing `output[0]`; the
    recordings it finished, by their made_with."""
    output, finished = [ADAPTIVE], []
    device = []
    monkeypatch.setattr(testkit.replay, "start_recording",
                        lambda images, work: device.append(FakeDevice(output[0])) or device[-1])
    monkeypatch.setattr(testkit.replay, "wait_resumed",
                        lambda d, config: {"artifact_name": "release-1-package"})
    monkeypatch.setattr(testkit.replay, "put_before_update", lambda d: {})
    monkeypatch.setattr(testkit.replay, "update_begins", lambda d: 7)
    monkeypatch.setattr(testkit.replay, "finish_recording",
                        lambda d, images, work, scenario, start, expect, made_with:
                        finished.append((scenario, expect.releases, made_with)) or made_with)
    return output, finished, device


def test_a_delta_recording_keeps_the_download_stats(tmp_path, recorded):
    output, finished, device = recorded
    made_with = record_standalone(tmp_path, tmp_path / "delta", "release-1-package",
                                  "http://10.0.2.2:1", "delta", {"images": {}},
                                  "http://10.0.2.2:2/release-1-package.mender", adaptive=True)
    assert made_with["download"]["mode"] == "adaptive"
    assert finished[0][:2] == ("delta", ("release-1", "release-1-package"))
    assert "install --auto-reboot http://10.0.2.2:2/release-1-package.mender;" in \
        device[0].console.sent[0]


def test_a_delta_recording_that_went_full_fails_loudly(tmp_path, recorded):
    output, finished, device = recorded
    output[0] = FULL
    with pytest.raises(NotAdaptive, match="answered 200"):
        record_standalone(tmp_path, tmp_path / "delta", "release-1-package",
                          "http://10.0.2.2:1", "delta", {}, "http://10.0.2.2:2/x.mender",
                          adaptive=True)
    assert finished == [] and device[0].closed  # no recording kept


@pytest.fixture
def ports(monkeypatch) -> dict[str, int]:
    """Free ports for the scenarios' artifact servers (a real replay may hold the fixed ones)."""
    ports = {scenario: free_port() for scenario in testkit.replay.ARTIFACT_PORTS}
    monkeypatch.setattr(testkit.replay, "ARTIFACT_PORTS", ports)
    return ports


def test_each_standalone_scenario_installs_from_its_artifact_server_on_its_port(
        tmp_path, delta_images, ports, monkeypatch):
    asked = {}

    def fake_record(images, work, release, url, scenario, made_with, artifact_url="",
                    adaptive=False):
        request = urllib.request.Request(artifact_url.replace("10.0.2.2", "127.0.0.1"),
                                         headers={"Range": "bytes=2-5"})
        with urllib.request.urlopen(request) as answer:
            asked[scenario] = (artifact_url, answer.status, answer.read(),
                               made_with["artifact"], release, adaptive)
        return "recorded"

    monkeypatch.setattr(testkit.replay, "record_standalone", fake_record)
    for scenario in ("install", "rollback", "delta"):
        assert record(scenario, delta_images, tmp_path / scenario, "http://10.0.2.2:1",
                      {}) == "recorded"
    for scenario, release, body, adaptive in (
            ("install", "release-2", b"leas", False),
            ("rollback", "release-broken", b"leas", False),
            ("delta", "release-1-package", bytes(range(2, 6)), True)):
        artifact = {"file": f"{release}.mender", "port": ports[scenario]}
        assert asked[scenario] == (f"http://10.0.2.2:{ports[scenario]}/{release}.mender", 206,
                                   body, artifact, release, adaptive)


def test_states_boot_while_their_recorded_artifact_is_served_on_its_port(
        tmp_path, images, monkeypatch, capsys):
    """A state cut during the download resumes it from the URL the recording used."""
    port = free_port()
    make_recording(tmp_path / "work", "install", images, made_with={
        "images": image_digests(images, image_files("install")),
        "artifact": {"file": "release-2.mender", "port": port}})
    fetched = []

    def fake_boot(job, images, name, update_urls=None) -> Verdict:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/release-2.mender",
                                         headers={"Range": "bytes=9-"})
        with job.around(), urllib.request.urlopen(request) as answer:
            fetched.append((answer.status, answer.read()))
        return Verdict(slot="A", release="release-1")

    monkeypatch.setattr(qemu.replay, "boot", fake_boot)
    assert run_replay(tmp_path, images, "--scenarios", "install", "--limit", "2") == 0
    assert fetched == [(206, b".mender")] * 2
    capsys.readouterr()


def test_daemon_states_boot_one_at_a_time_each_on_a_fresh_copy_of_the_server_snapshot(
        tmp_path, images, monkeypatch, capsys):
    """Each daemon state resumes the deployment on the server as it was when the
    deployment was created (another state's reports must not reach it), on the recorded
    port, one at a time (one port), while the standalone states boot beside it."""
    make_recording(tmp_path / "work", "install", images)
    recording = make_recording(tmp_path / "work", "daemon", images, recording_id="rec2",
                               made_with={"images": image_digests(images, image_files("daemon")),
                                          "server": {"snapshot": "server", "port": 4711}})
    (recording.directory / "server").mkdir()
    (recording.directory / "server" / "tern.db").write_text("the deployment, pending")
    seen, jobs = [], []

    class FakeServer:
        def __init__(self, data_dir, names=(), port=None):
            self.data_dir, self.port = data_dir, port

        def __enter__(self):
            seen.append(((self.data_dir / "tern.db").read_text(), self.port))
            return self

        def __exit__(self, *exc):
            pass

    def fake_boot(job, images, name, update_urls=None) -> Verdict:
        jobs.append(job)
        with job.around() as live:
            if job.recording.scenario == "daemon":
                (live.data_dir / "tern.db").write_text("reported success")  # the state's report
        return Verdict(slot="A", release="release-1")

    monkeypatch.setattr(testkit.live_server, "LiveServer", FakeServer)
    monkeypatch.setattr(qemu.replay, "boot", fake_boot)
    assert run_replay(tmp_path, images, "--scenarios", "install", "daemon",
                      "--limit", "3") == 0
    assert seen == [("the deployment, pending", 4711)] * 3
    assert {job.exclusive for job in jobs if job.recording.scenario == "daemon"} == {"port 4711"}
    assert {job.exclusive for job in jobs if job.recording.scenario == "install"} == {""}
    assert [job.recording.scenario for job in jobs[:2]] == ["install", "daemon"]
    assert (recording.directory / "server" / "tern.db").read_text() == "the deployment, pending"
    capsys.readouterr()


def test_a_delta_recording_is_stale_when_its_artifact_changes(tmp_path, delta_images):
    make_recording(tmp_path, "delta", delta_images)
    make_recording(tmp_path, "install", delta_images)
    assert kept_recording(tmp_path / "delta",
                          image_digests(delta_images, image_files("delta"))) is not None
    (delta_images / "release-1-package.mender").write_text("rebuilt")
    with pytest.raises(StaleRecording, match=r"release-1-package\.mender changed"):
        kept_recording(tmp_path / "delta", image_digests(delta_images, image_files("delta")))
    # the other scenarios do not depend on it
    assert kept_recording(tmp_path / "install",
                          image_digests(delta_images, image_files("install"))) is not None


def test_the_delta_scenario_without_its_artifact_asks_for_make_delta_images(tmp_path, images,
                                                                           capsys):
    code = main(["--workdir", str(tmp_path / "work"), "--images", str(images),
                 "--scenarios", "delta", "--reliability", str(tmp_path / "R.md")])
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert "release-1-package.mender: run `make delta-images`" in error
    assert "Traceback" not in error


def test_a_delta_run_boots_its_states_and_keeps_the_other_rows(tmp_path, delta_images, booted,
                                                               capsys):
    make_recording(tmp_path / "work", "install", delta_images)
    run_replay(tmp_path, delta_images, "--scenarios", "install", "--limit", "2")
    make_recording(tmp_path / "work", "delta", delta_images, recording_id="rec2")
    assert run_replay(tmp_path, delta_images, "--scenarios", "delta", "--limit", "3") == 0
    lines = Results(tmp_path / "work" / RESULTS).read()
    assert [r.scenario for r in lines] == ["install"] * 2 + ["delta"] * 3
    section = (tmp_path / "RELIABILITY.md").read_text()
    assert "| install | 10 | 5 | 10 | 6 | 2 |" in section
    assert "| delta | 10 | 5 | 10 | 6 | 3 |" in section and DELTA_ABOUT in section
    capsys.readouterr()
