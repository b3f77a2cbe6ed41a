"""The adaptive install of an artifact with a block index, by the agent (`install FILE|URL`)
on the simulated host device: each block from the target slot in place, the active slot or
zeros, the rest by HTTP Range (from a plain HTTP file server, testkit.range_files, which can
also ignore Range or damage a range); and each reason to fall back to the full payload
within the same install."""
import json
import random
from pathlib import Path

import pytest

from testkit.artifacts import write_indexed_artifact_file
from testkit.host_device import new_device
from testkit.range_files import RangeFileServer
from updater.agent.states import State
from updater.failpoints import CRASH_EXIT
from updater.install import STATS

ROOT = Path(__file__).resolve().parents[3]
MiB = 1 << 20
BLOCK = 4096


def images() -> tuple[bytes, bytes]:
    """An old image (random blocks, 1 MiB of zeros) and a new one with three changed runs."""
    rng = random.Random(19)
    old = bytearray(rng.randbytes(8 * MiB))
    old[2 * MiB:3 * MiB] = bytes(MiB)
    new = bytearray(old)
    for start in (MiB + 100, 5 * MiB, 7 * MiB + 3 * BLOCK):
        new[start:start + 20_000] = rng.randbytes(20_000)
    return bytes(old), bytes(new) + b"tail"  # ends inside a block


OLD, NEW = images()


@pytest.fixture
def device(tmp_path):
    device = new_device(tmp_path / "device")
    device.slot("a").write_bytes(OLD)  # the running release
    return device


@pytest.fixture
def artifact(tmp_path):
    return write_indexed_artifact_file(tmp_path / "release-2.mender", NEW, name="release-2")


def messages(device) -> list[str]:
    update = device.stored()["update"]
    log = update.log if update else device.last_result()["log"]
    return [line["message"] for line in log]


def stats(device) -> dict:
    [line] = [m for m in messages(device) if m.startswith(STATS)]
    return json.loads(line[len(STATS):])


def installed(device) -> None:
    assert device.stored()["state"] is State.ARTIFACT_REBOOT
    assert device.slot("b").read_bytes() == NEW


def test_a_delta_fetches_only_the_changed_chunks_by_range(device, artifact):
    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url) == 0
    installed(device)
    size = artifact.stat().st_size
    # the head probe, the index, and the three changed 64 KiB chunks (one run spans two)
    assert server.sent < 0.1 * size
    assert stats(device) == {"mode": "adaptive", "fetched": server.sent, "full": pytest.approx(
        size, rel=0.01)}
    assert all(r.startswith("bytes=") for r in server.ranges)
    text = "\n".join(messages(device))
    assert " 256 zero, " in text and "0 in place" in text


def test_only_the_leaves_of_the_chunks_no_slot_holds_in_place_are_fetched(device, artifact):
    """The index's top comes with the head; the leaves (block hashes) only of the chunks whose
    top entry neither slot matches in place, in one coalesced range."""
    from artifact import ArtifactReader
    from artifact.block_index import index_anchor, read_index

    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url) == 0
    installed(device)
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        anchor = index_anchor(reader.header)
        index = read_index(stream, anchor)
    size = index.chunk_size
    differing = [c for c in range(index.chunk_count)
                 if NEW[c * size:(c + 1) * size] != OLD[c * size:(c + 1) * size]]
    assert differing == [16, 80, 112, 128]  # the three changed runs, the tail
    end = artifact.stat().st_size
    leaves = end - anchor.area
    asked = [tuple(int(x) for x in r.removeprefix("bytes=").split("-")) for r in server.ranges
             if r.startswith("bytes=") and not r.startswith("bytes=-")]
    in_leaves = [r for r in asked if leaves <= r[0] < leaves + anchor.leaves]
    assert in_leaves == [(leaves + index.leaf_span(differing[0])[0],
                          leaves + index.leaf_span(differing[-1])[1] - 1)]
    assert f"bytes={end - anchor.size}-{end - 1}" in server.ranges  # the top
    assert f"match a slot in place; the leaves of the {len(differing)} others" in \
        "\n".join(messages(device))


def test_an_index_of_format_1_gets_the_full_install(device, tmp_path):
    """What a format-1 artifact's header says of its index (the agent decides from it alone):
    refused in one clear line, and the full payload installed."""
    from artifact import ArtifactHeader, write_artifact
    from artifact.payloads import PayloadOptions, Software, rootfs_image

    image = tmp_path / "rootfs.ext4"
    image.write_bytes(NEW)
    source = rootfs_image(image, Software(version="release-2"), PayloadOptions())
    source.header.meta_data = {"tern.block_index": {"format": 1, "size": 1000,
                                                    "sha256": "0" * 64}}
    artifact = tmp_path / "format-1.mender"
    with open(artifact, "wb") as out:
        write_artifact(out, ArtifactHeader(name="release-2", device_types=["qemu-arm64"],
                                           payloads=[]), [source])
    assert device.run("install", str(artifact)) == 0
    installed(device)
    assert "adaptive install: the block index is not readable: headers/0000/meta-data: " \
           "tern.block_index: block index format 1, this reader reads format 2 only; " \
           "downloading the full artifact" in messages(device)
    assert stats(device)["mode"] == "full"


def test_a_cut_delta_install_resumes_from_the_blocks_the_target_slot_holds(device, artifact):
    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url, failpoints=f"payload:{6 * MiB}") == CRASH_EXIT
        assert device.stored()["state"] is State.DOWNLOAD
        first = server.sent
        device.power_on()
        assert device.run("resume") == 0
    installed(device)
    held = [m for m in messages(device) if "in place" in m][-1]
    assert int(held.split(", ")[1].split()[0]) >= 6 * MiB // BLOCK - 256  # but the zeros
    assert stats(device)["fetched"] < first  # the chunks before the cut are not fetched again


def test_a_server_that_ignores_range_gets_the_full_install(device, artifact):
    with RangeFileServer(artifact) as server:
        server.ignore_range = True
        assert device.run("install", server.url) == 0
    installed(device)
    text = "\n".join(messages(device))
    assert "answered 200 OK to a Range request" in text
    assert "; downloading the full artifact" in text
    assert stats(device)["mode"] == "full"


def test_a_damaged_chunk_from_the_server_is_refused_and_the_full_payload_installed(
        device, artifact):
    with RangeFileServer(artifact) as server:
        server.corrupt_at = _fetched_offset(device, artifact)
        assert device.run("install", server.url) == 0
    installed(device)
    text = "\n".join(messages(device))
    assert "a chunk from the server is refused" in text
    assert stats(device)["mode"] == "full"


def _fetched_offset(device, artifact) -> int:
    """An artifact offset inside a chunk the install fetches (the one of the change at 5 MiB)."""
    from artifact import ArtifactReader
    from artifact.block_index import data_content_offset, index_anchor, read_index

    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        index = read_index(stream, index_anchor(reader.header))
        start, end = index.chunk_span(5 * MiB // index.chunk_size)
        return data_content_offset(reader.payload_offset) + (start + end) // 2



def test_an_install_from_a_file_reads_only_what_it_needs_from_it(device, artifact):
    assert device.run("install", str(artifact)) == 0
    installed(device)
    assert stats(device)["mode"] == "adaptive"
    assert stats(device)["fetched"] < 0.1 * artifact.stat().st_size


def test_an_index_that_does_not_verify_gets_the_full_install(device, artifact):
    data = bytearray(artifact.read_bytes())
    data[-10] ^= 0xFF  # in the index, past the tar's end: the payload is intact
    artifact.write_bytes(bytes(data))
    assert device.run("install", str(artifact)) == 0
    installed(device)
    assert "adaptive install: the block index does not verify" in "\n".join(messages(device))
    assert stats(device)["mode"] == "full"


def test_a_transfer_above_the_set_share_gets_the_full_install(device, artifact):
    device.settings["delta_max_share"] = 0.01
    assert device.run("install", str(artifact)) == 0
    installed(device)
    assert "above delta_max_share (1%); downloading the full artifact" in \
        "\n".join(messages(device))


def test_without_a_block_index_the_full_payload_is_streamed(device, make_artifact):
    assert device.run("install", str(make_artifact({"rootfs.ext4": NEW}))) == 0
    installed(device)
    assert "adaptive install: the artifact has no block index; downloading the full " \
           "artifact" in messages(device)


def test_the_write_markers_count_the_bytes_written_not_the_slot(device, artifact, tmp_path):
    """The target slot holds the release before last (here: the old one), so only the
    changed blocks are written: the console's tenths (where the power-cut campaign cuts)
    are of those bytes, each announced, while `tern-written` says where in the slot."""
    device.slot("b").write_bytes(OLD)
    console = tmp_path / "console"
    device.settings["console_markers"] = str(console)
    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url) == 0
    installed(device)
    lines = console.read_text().splitlines()
    assert [line for line in lines if line.startswith("tern-write: ")] == [
        f"tern-write: {percent}%" for percent in range(10, 101, 10)]
    offsets = [int(line.split()[1]) for line in lines if line.startswith("tern-written: ")]
    assert offsets[-1] == len(NEW) and len(offsets) == 4  # the three changed runs, the tail


def change_active_after_survey(monkeypatch, device, blocks: list[int]) -> None:
    """The running slot (a rootfs mounted read-write) changes `blocks` right after the
    survey hashed it: before the write pass copies them (`Device.run` forks: the child
    inherits the patch)."""
    from updater.install import adaptive

    survey = adaptive.survey_slots

    def survey_then_change(index, target, active):
        found = survey(index, target, active)
        with open(device.slot("a"), "r+b") as slot:
            for block in blocks:
                slot.seek(block * BLOCK + 10)
                slot.write(b"a log line written while the install ran\n")
        return found

    monkeypatch.setattr(adaptive, "survey_slots", survey_then_change)


def test_blocks_changed_in_the_active_slot_during_the_install_are_fetched_from_the_server(
        device, artifact, monkeypatch):
    """Block 1024 is in a chunk the plan does not fetch: one Range of its own; block 1793 is
    in a chunk it does (before its first fetched block): taken from the planned range."""
    from artifact import ArtifactReader
    from artifact.block_index import data_content_offset, index_anchor, read_index

    change_active_after_survey(monkeypatch, device, [1024, 1793])
    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url) == 0
    installed(device)
    assert stats(device)["mode"] == "adaptive"
    assert stats(device)["fetched"] == server.sent
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        index = read_index(stream, index_anchor(reader.header))
        base = data_content_offset(reader.payload_offset)
    start, end = (base + at for at in index.chunk_span(1024 // index.chunk_blocks))
    assert f"bytes={start}-{end - 1}" in server.ranges
    assert "adaptive install: 2 blocks changed in the active slot while the install ran: " \
           "taken from their chunks instead, 1 chunks fetched for them alone " \
           f"({end - start} bytes)" in messages(device)


def test_changed_blocks_whose_chunks_would_pass_delta_max_share_get_the_full_install(
        device, artifact, monkeypatch):
    device.settings["delta_max_share"] = 0.15  # the plan takes under 10 %
    # a block in each of the first 112 chunks but the zeros' (32 to 47) and the planned ones
    skipped = {16, 80, *range(32, 48)}
    change_active_after_survey(monkeypatch, device, [
        chunk * 16 + 3 for chunk in range(112) if chunk not in skipped])
    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url) == 0
    installed(device)
    assert stats(device)["mode"] == "full"
    assert any(m.startswith("adaptive install: blocks changed in the active slot while the "
                            "install ran: fetching their chunks takes the transfer to ")
               and m.endswith(" of the full download, above delta_max_share (15%); "
                              "downloading the full artifact") for m in messages(device))


def test_a_chunk_fetched_for_a_changed_block_while_a_planned_range_is_half_read(
        device, tmp_path, monkeypatch):
    """Compressible images (a quarter of each block random): the chunks to fetch, 2 and 6,
    come in one coalesced range; block 70 of chunk 4, between them, changes in the active
    slot: its chunk comes by a second request while the first's answer is still being read
    (each stream has its own connection)."""
    from artifact import ArtifactReader
    from artifact.block_index import data_content_offset, index_anchor, read_index

    rng = random.Random(23)
    old = bytearray(b"".join(rng.randbytes(1024) + bytes(3072) for _ in range(512)))
    new = bytearray(old)
    for block in (40, 100):
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(1024) + bytes(3072)
    device.slot("a").write_bytes(old)
    artifact = write_indexed_artifact_file(tmp_path / "sparse.mender", bytes(new), name="sparse")
    change_active_after_survey(monkeypatch, device, [70])
    with RangeFileServer(artifact) as server:
        assert device.run("install", server.url) == 0
    assert device.slot("b").read_bytes() == new
    assert (stats(device)["mode"], stats(device)["fetched"]) == ("adaptive", server.sent)
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        index = read_index(stream, index_anchor(reader.header))
        base = data_content_offset(reader.payload_offset)
    planned = f"bytes={base + index.chunk_span(2)[0]}-{base + index.chunk_span(6)[1] - 1}"
    changed = f"bytes={base + index.chunk_span(4)[0]}-{base + index.chunk_span(4)[1] - 1}"
    assert server.ranges[-2:] == [planned, changed]
    assert "adaptive install: 1 blocks changed in the active slot while the install ran: " \
           "taken from their chunks instead, 1 chunks fetched for them alone " \
           f"({index.chunk_span(4)[1] - index.chunk_span(4)[0]} bytes)" in messages(device)
