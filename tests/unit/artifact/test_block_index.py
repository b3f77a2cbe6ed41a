"""The block index: the writer's layout, the index's checks against the signed header, the
planner, and a device's reconstruction of a new image from an old one and the planned ranges."""
import io
import json
import os
import random
import zlib
from array import array
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from artifact import ArtifactReader, ChecksumError, StructureError
from artifact.block_index import (
    ANCHOR,
    BlockIndex,
    IndexAnchor,
    block_digest,
    chunk_digest,
    compress_chunk,
    decompress_chunk,
    index_anchor,
    read_index,
    verified_blocks,
    verify_chunks,
    zero_digest,
)
from artifact.block_plan import (
    FETCH,
    LOCAL,
    ZERO,
    SlotHashes,
    block_sources,
    plan_fetch,
    survey_slots,
)
from artifact.block_writer import write_indexed_artifact
from artifact.cli import cli
from artifact.header import ArtifactHeader
from artifact.payloads import PayloadOptions, Software, rootfs_image
from artifact.signing import load_key_file
from artifact.writer import sign_artifact

BLOCK = 4096


def old_image(seed: int = 1, blocks: int = 200) -> bytearray:
    """Random blocks, with a run of zero blocks (free space) in the middle."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(blocks * BLOCK))
    data[80 * BLOCK:120 * BLOCK] = bytes(40 * BLOCK)
    return data


def old_and_changed_image() -> tuple[bytearray, bytearray]:
    """old_image(), and a copy with blocks changed in chunks 0, 2 (both blocks), 25 (in the
    zeros) and 37."""
    old = old_image()
    new = bytearray(old)
    for block in (3, 9, 10, 150):
        new[block * BLOCK:block * BLOCK + 10] = b"changed!!!"
    new[100 * BLOCK:101 * BLOCK] = os.urandom(BLOCK)
    return old, new


def write(tmp_path: Path, image: bytes, *, name="rootfs.ext4", compression="gzip", key=None,
          chunk_size=4 * BLOCK, block_size=BLOCK) -> Path:
    path = tmp_path / name
    path.write_bytes(image)
    source = rootfs_image(path, Software(version="release-2"), PayloadOptions())
    header = ArtifactHeader(name="release-2", device_types=["qemu-arm64"], payloads=[])
    out = tmp_path / f"{name}-{compression}.mender"
    with open(out, "wb") as stream:
        write_indexed_artifact(stream, header, source, compression=compression,
                               signing_key=key, block_size=block_size, chunk_size=chunk_size)
    return out


def open_index(artifact: Path, keys=()) -> tuple[BlockIndex, int, str, IndexAnchor]:
    with open(artifact, "rb") as stream, ArtifactReader(stream, list(keys)) as reader:
        anchor = index_anchor(reader.header)
        return (read_index(stream, anchor), reader.payload_offset, reader.compression, anchor)


def plan(artifact: Path, slot: bytes, **options):
    index, offset, _, anchor = open_index(artifact)
    slot_file = artifact.with_suffix(".slot")
    slot_file.write_bytes(slot)
    find = SlotHashes.of_file(slot_file, index.block_size).find
    return plan_fetch(index, offset, find, artifact_size=artifact.stat().st_size,
                      index_size=anchor.area, **options)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_an_indexed_artifact_reads_as_an_ordinary_one_and_its_index_matches(tmp_path,
                                                                            compression):
    image = bytes(old_image()) + b"tail" * 25  # ends inside a block
    artifact = write(tmp_path, image, compression=compression)
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        contents = [b"".join(file) for payload in reader.payloads() for file in payload.files()]
        assert contents == [image]  # the chained members read as one stream
        anchor = IndexAnchor.from_payload(reader.header.payloads[0])
    index, offset, _, _ = open_index(artifact)
    assert anchor.size == len(index.encode())
    assert (index.block_size, index.image_size, index.block_count) == (BLOCK, len(image), 201)
    assert index.chunk_count == 51 and index.chunk_blocks == 4
    for block in range(index.block_count):
        content = image[block * BLOCK:(block + 1) * BLOCK]
        assert index.block_hash(block) == block_digest(content)
    with open(artifact, "rb") as stream:
        verify_chunks(stream, index, offset, compression)
        # Each chunk, read at its offset, decompresses on its own into its blocks.
        data = stream.seek(0) or stream.read()
    base = offset + 512
    start, end = index.chunk_span(7)
    blocks = dict(verified_blocks(index, 7, data[base + start:base + end], compression))
    assert blocks == {b: image[b * BLOCK:(b + 1) * BLOCK] for b in range(28, 32)}


def test_the_index_is_covered_by_the_signature(tmp_path, keys):
    key = keys["ecdsa"]
    artifact = write(tmp_path, bytes(old_image()), key=key.private_key)
    index, _, _, anchor = open_index(artifact, [load_verify(key)])
    data = artifact.read_bytes()
    tampered = tmp_path / "tampered.mender"
    tampered.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    with open(tampered, "rb") as stream, ArtifactReader(stream, [load_verify(key)]) as reader, \
            pytest.raises(ChecksumError, match="block index"):
        read_index(stream, index_anchor(reader.header))
    with pytest.raises(StructureError, match="signed header says"):
        BlockIndex.parse(index.encode()[:-8], anchor)


def load_verify(key):
    return load_key_file(str(key.public_path))


def test_a_damaged_chunk_fails_its_block_hashes(tmp_path):
    artifact = write(tmp_path, bytes(old_image()), compression="none")
    index, offset, compression, _ = open_index(artifact)
    data = bytearray(artifact.read_bytes())
    data[offset + 512 + index.chunk_span(3)[0] + 5] ^= 1
    damaged = tmp_path / "damaged.mender"
    damaged.write_bytes(data)
    with open(damaged, "rb") as stream, pytest.raises(ChecksumError, match="block 12"):
        verify_chunks(stream, index, offset, compression)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: b"NOTANIDX" + d[8:], "bad magic"),
    (lambda d: d[:-1], "expected"),
    (lambda d: d[:8] + (1000).to_bytes(4, "little") + d[12:], "power of two"),
    (lambda d: d[:-16] + d[-8:] + d[-16:-8], "do not increase"),
    (lambda d: d[:10], "truncated"),
])
def test_a_malformed_index_is_refused(tmp_path, mutate, message):
    index, *_ = open_index(write(tmp_path, bytes(old_image())))
    with pytest.raises(StructureError, match=message):
        BlockIndex.from_raw(mutate(index.serialize()))


def test_a_chunk_must_decompress_to_exactly_its_size():
    with pytest.raises(StructureError):
        decompress_chunk("gzip", b"not gzip", 10)
    member = compress_chunk("gzip", b"x" * 100)
    with pytest.raises(StructureError, match="expected 99"):
        decompress_chunk("gzip", member, 99)
    with pytest.raises(StructureError, match="one gzip member"):
        decompress_chunk("gzip", member + member, 100)


def test_signing_keeps_the_index(tmp_path, keys):
    artifact = write(tmp_path, bytes(old_image()))
    signed = tmp_path / "signed.mender"
    with open(signed, "wb") as out:
        sign_artifact(artifact, out, keys["rsa"].private_key)
    index, offset, compression, _ = open_index(signed, [load_verify(keys["rsa"])])
    assert index.serialize() == open_index(artifact)[0].serialize()
    with open(signed, "rb") as stream:
        verify_chunks(stream, index, offset, compression)


def test_the_planner_fetches_only_the_chunks_of_changed_blocks(tmp_path):
    old, new = old_and_changed_image()
    artifact = write(tmp_path, bytes(new))
    result = plan(artifact, bytes(old))
    assert [(r.first, r.last) for r in result.ranges] == [(0, 0), (2, 2), (25, 25), (37, 37)]
    assert result.blocks_fetched == 5 and result.blocks_zero == 39
    assert result.blocks_local == 200 - 5 - 39
    assert result.full_bytes == artifact.stat().st_size - open_index(artifact)[3].area
    assert 0 < result.share < 0.1
    index, offset, *_ = open_index(artifact)
    assert result.ranges[1].start == offset + 512 + index.chunk_span(2)[0]
    assert result.ranges[1].header() == f"bytes={result.ranges[1].start}-{result.ranges[1].end - 1}"

    # Adjacent chunks make one range; a gap up to max_gap is bridged.
    new[4 * BLOCK] ^= 1  # chunk 1: now 0, 1, 2 are adjacent
    artifact = write(tmp_path, bytes(new), name="adjacent.ext4")
    assert [(r.first, r.last) for r in plan(artifact, bytes(old)).ranges] == \
        [(0, 2), (25, 25), (37, 37)]
    gap = max(index.chunk_span(c)[1] - index.chunk_span(c)[0] for c in range(26, 37))
    bridged = plan(artifact, bytes(old), max_gap=11 * gap)
    assert [(r.first, r.last) for r in bridged.ranges] == [(0, 2), (25, 37)]

    # From an empty slot, everything but zeros is fetched, and that costs about the full size.
    everything = plan(artifact, bytes(len(old)))
    assert everything.blocks_local == 0 and everything.chunks == 51 - 10
    assert everything.share > 0.75


def test_block_sources_says_where_each_block_comes_from():
    hashes = [block_digest(bytes([n]) * BLOCK) for n in (1, 0, 2)]
    index = BlockIndex.of_leaves(BLOCK, 2, 3 * BLOCK, b"".join(hashes), array("Q", [10, 20, 30]))
    local = {hashes[0]: ("active", 8192)}
    assert list(block_sources(index, local.get)) == [
        (0, LOCAL, ("active", 8192)), (1, ZERO, None), (2, FETCH, 1)]


@pytest.mark.parametrize("held", ["11011", "00000", "11111", "01110", "10001"])
def test_block_sources_leave_out_the_blocks_held_in_place_run_by_run(held):
    hashes = [block_digest(bytes([n]) * BLOCK) for n in range(1, 6)]
    index = BlockIndex.of_leaves(BLOCK, 2, 5 * BLOCK, b"".join(hashes),
                                 array("Q", [0, 1, 2, 3]))
    held = bytes(int(h) for h in held)
    assert [block for block, _, _ in block_sources(index, {}.get, held)] == \
        [block for block in range(5) if not held[block]]
    plan = plan_fetch(index, 0, {}.get, artifact_size=100, index_size=10, held=held)
    assert plan.blocks_held == sum(held) and plan.blocks_fetched == 5 - sum(held)


def test_a_device_rebuilds_the_new_image_from_the_old_one_and_the_ranges(tmp_path):
    """What the adaptive install will do: the local blocks, the zero blocks, and the fetched
    chunks' blocks (each verified) give back the new image, byte for byte."""
    old = old_image(seed=2)
    new = bytearray(old)
    new[50 * BLOCK:53 * BLOCK] = os.urandom(3 * BLOCK)
    new[180 * BLOCK + 7] ^= 0xFF
    new += os.urandom(BLOCK + 123)  # the new image is longer, ends inside a block
    artifact = write(tmp_path, bytes(new), compression="zstd")
    index, offset, compression, anchor = open_index(artifact)
    slot = tmp_path / "active"
    slot.write_bytes(old)
    lookup = SlotHashes.of_file(slot, BLOCK)
    result = plan_fetch(index, offset, lookup.find, artifact_size=artifact.stat().st_size,
                        index_size=anchor.area)
    served = artifact.read_bytes()
    fetched = {}
    for byte_range in result.ranges:  # what the server answers to each Range request
        body = served[byte_range.start:byte_range.end]
        for chunk in range(byte_range.first, byte_range.last + 1):
            start, end = (offset + 512 + x - byte_range.start for x in index.chunk_span(chunk))
            fetched.update(verified_blocks(index, chunk, body[start:end], compression))
    rebuilt = io.BytesIO()
    for block, kind, where in block_sources(index, lookup.find):
        if kind == ZERO:
            rebuilt.write(bytes(BLOCK))
        elif kind == LOCAL:
            rebuilt.write(bytes(old[where:where + BLOCK]))
        else:
            rebuilt.write(fetched[block])
    assert rebuilt.getvalue() == bytes(new)
    assert result.total_bytes < 0.2 * result.full_bytes


def test_slot_hashes_finds_the_lowest_block_with_a_hash(tmp_path):
    slot = tmp_path / "slot"
    slot.write_bytes(b"a" * BLOCK + b"b" * BLOCK + b"a" * BLOCK + b"c" * 100)
    lookup = SlotHashes.of_file(slot, BLOCK)
    assert len(lookup) == 3  # the short tail is no block
    assert lookup.find(block_digest(b"a" * BLOCK)) == 0
    assert lookup.find(block_digest(b"b" * BLOCK)) == BLOCK
    assert lookup.find(block_digest(b"c" * BLOCK)) is None


def test_cli_writes_reads_and_validates_an_index(tmp_path, keys):
    image = tmp_path / "rootfs.ext4"
    image.write_bytes(bytes(old_image()))
    out = tmp_path / "indexed.mender"
    runner = CliRunner()
    result = runner.invoke(cli, ["write", "rootfs-image", "-f", str(image), "-n", "release-2",
                                 "-t", "qemu-arm64", "-o", str(out), "--block-index",
                                 "--chunk-size", "32768", "-k", str(keys["rsa"].private_path)])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli, ["read", str(out), "-k", str(keys["rsa"].public_path)])
    assert shown.exit_code == 0, shown.output
    assert "Block index:\n  Block size: 4096\n  Blocks: 200\n  Chunk size: 32768\n" \
           "  Chunks: 25" in shown.output
    anchor = open_index(out)[3]
    assert f"  Index: format 2, {anchor.area} bytes\n    Top (a hash per chunk, zlib): " \
           f"{anchor.size} bytes, sha256 {anchor.sha256}\n    Leaves (a hash per non-zero " \
           "block): 2560 bytes, 160 blocks" in shown.output
    as_json = runner.invoke(cli, ["read", "--json", str(out)])
    described = json.loads(as_json.output)
    assert described["block_index"]["chunk_count"] == 25
    assert ANCHOR in described["payloads"][0]["meta_data"]
    valid = runner.invoke(cli, ["validate", str(out), "-k", str(keys["rsa"].public_path)])
    assert valid.exit_code == 0, valid.output
    plain = tmp_path / "plain.mender"
    runner.invoke(cli, ["write", "rootfs-image", "-f", str(image), "-n", "r", "-t", "x", "-o",
                        str(plain)])
    assert "Block index" not in runner.invoke(cli, ["read", str(plain)]).output


@pytest.mark.parametrize("flags,message", [
    (["--block-size", "1000"], "block size 1000"),
    (["--chunk-size", "6000"], "chunk size 6000"),
    (["--compression", "lzma"], "needs none, gzip, zstd"),
])
def test_cli_refuses_bad_index_options_in_one_line(tmp_path, flags, message):
    image = tmp_path / "rootfs.ext4"
    image.write_bytes(bytes(8 * BLOCK))
    result = CliRunner().invoke(cli, ["write", "rootfs-image", "-f", str(image), "-n", "r",
                                      "-t", "x", "-o", str(tmp_path / "a.mender"),
                                      "--block-index", *flags])
    assert result.exit_code == 4
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "a.mender").exists()



@pytest.mark.parametrize("mutate,message", [
    (lambda raw, encoded: zlib.compress(raw + bytes(10 << 20)), "longer than its head"),
    (lambda raw, encoded: encoded[:-5], "truncated"),
    (lambda raw, encoded: encoded + b"junk", "followed by other bytes"),
    (lambda raw, encoded: b"not zlib" + encoded, "cannot decompress"),
])
def test_a_badly_compressed_index_is_refused(tmp_path, mutate, message):
    index, *_ = open_index(write(tmp_path, bytes(old_image())))
    with pytest.raises(StructureError, match=message):
        BlockIndex.parse(mutate(index.serialize(), index.encode()))


def test_sources_leave_what_the_target_holds_in_place_then_take_zero_then_the_active_slot(
        tmp_path):
    blocks = [b"a" * BLOCK, bytes(BLOCK), b"b" * BLOCK, b"c" * BLOCK, b"d" * BLOCK]
    target = tmp_path / "target"
    target.write_bytes(b"a" * BLOCK + b"x" * BLOCK * 2 + b"c" * BLOCK)
    active = tmp_path / "active"
    active.write_bytes(b"c" * BLOCK + b"b" * BLOCK)
    hashes = b"".join(block_digest(b) for b in blocks)
    index, survey = surveyed(
        BlockIndex.of_leaves(BLOCK, 2, len(blocks) * BLOCK, hashes, array("Q", [0, 1, 2, 3])),
        target, active)
    assert list(survey.held) == [1, 0, 0, 1, 0]
    sources = list(block_sources(index, survey.active.find, survey.held, survey.same))
    assert sources == [(1, ZERO, None), (2, LOCAL, BLOCK), (4, FETCH, 2)]


def test_slot_hashes_find_the_lowest_block_of_each_hash(tmp_path):
    rng = random.Random(3)
    blocks = [rng.randbytes(BLOCK) for _ in range(300)]
    blocks += blocks[:50]  # duplicates: the first place is found
    slot = tmp_path / "slot"
    slot.write_bytes(b"".join(blocks) + b"partial")
    lookup = SlotHashes.of_file(slot, BLOCK)
    assert len(lookup) == 350
    assert all(lookup.find(block_digest(b)) == i * BLOCK for i, b in enumerate(blocks[:300]))
    assert lookup.find(block_digest(b"partial")) is None
    assert [lookup[i] for i in range(len(lookup))] == sorted(lookup[i] for i in range(350))


def test_the_survey_proves_each_kept_block_and_tables_the_active_slots_non_zero_blocks(
        tmp_path):
    a, b, c, x, y, z = (bytes([n]) * BLOCK for n in b"abcxyz")
    tail = b"d" * 100  # the image ends inside its last block
    new = [a, bytes(BLOCK), b, c, tail]
    target, active = tmp_path / "target", tmp_path / "active"
    target.write_bytes(a + bytes(BLOCK) + x + c + tail)
    active.write_bytes(a + z + x + y)
    whole = BlockIndex.of_leaves(BLOCK, 2, 4 * BLOCK + len(tail),
                                 b"".join(block_digest(block) for block in new),
                                 array("Q", [0, 1, 2, 3]))
    index, survey = surveyed(whole, target, active)
    # chunk 0 (a, zeros): the target's matches its top entry in place; chunk 1 (b, c): no
    # slot's does: x, the active slot's bytes, lacks b's leaf, c has its own; chunk 2 (the
    # tail): the target's matches. No chunk matches the active slot whole: nothing is `same`.
    assert list(survey.held) == [1, 1, 0, 1, 1]
    assert list(survey.same) == [0, 0, 0, 0, 0]
    assert survey.fetched == [1]
    assert [survey.active.find(block_digest(block)) for block in (a, z, x, y)] == \
        [0, BLOCK, 2 * BLOCK, 3 * BLOCK]
    assert survey.active.find(block_digest(bytes(BLOCK))) is None  # zeros are not tabled
    short = tmp_path / "short"
    short.write_bytes(a)
    assert list(surveyed(whole, short, active)[1].held) == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("seed", range(12))
def test_the_survey_agrees_block_by_block_with_hashing_every_block(tmp_path, seed):
    """Slots of random lengths holding a random mix of the new image's blocks, the old one's,
    zeros and others: whatever the survey skips, it keeps exactly the target's blocks that
    hash to their leaf, calls `same` exactly the chunks whose every active block does, and
    tables every non-zero block of the active slot that is whole in the image's extent."""
    rng = random.Random(seed)
    pool = [bytes(BLOCK), *(rng.randbytes(BLOCK) for _ in range(5))]
    blocks = 4 * 9 + rng.randrange(4)
    new = b"".join(rng.choice(pool) for _ in range(blocks)) + rng.randbytes(rng.randrange(BLOCK))

    def slot() -> bytes:
        data = bytearray(new)
        for block in range(blocks):
            if rng.random() < 0.3:
                data[block * BLOCK:(block + 1) * BLOCK] = rng.choice(pool)
        return bytes(data[:rng.choice([len(data), len(data) + BLOCK,
                                       rng.randrange(len(data))])])

    target, active = tmp_path / "target", tmp_path / "active"
    target.write_bytes(slot())
    active.write_bytes(slot() if seed % 3 else target.read_bytes())  # alike, as after a copy
    count = -(-len(new) // BLOCK)
    leaves = [block_digest(new[b * BLOCK:(b + 1) * BLOCK]) for b in range(count)]
    whole = BlockIndex.of_leaves(BLOCK, 4, len(new), b"".join(leaves),
                                 array("Q", range(-(-count // 4) + 1)))
    _, survey = surveyed(whole, target, active)

    def leaf_in(path: Path, block: int) -> bytes | None:
        data = path.read_bytes()[block * BLOCK:(block + 1) * BLOCK][:len(new) - block * BLOCK]
        return block_digest(data) if len(data) == min(BLOCK, len(new) - block * BLOCK) else None

    assert list(survey.held) == [leaf_in(target, b) == leaves[b] for b in range(count)]
    for chunk in range(-(-count // 4)):
        chunk_blocks = range(4 * chunk, min(4 * chunk + 4, count))
        expected = all(leaf_in(active, b) == leaves[b] for b in chunk_blocks)
        assert [survey.same[b] for b in chunk_blocks] == [expected] * len(chunk_blocks)
    data = active.read_bytes()[:len(new)]
    tabled = [data[at:at + BLOCK] for at in range(0, len(data) - BLOCK + 1, BLOCK)
              if data[at:at + BLOCK] != bytes(BLOCK)]
    assert len(survey.active) == len(tabled)
    for block in tabled:
        found = survey.active.find(block_digest(block))
        assert found is not None and data[found:found + BLOCK] == block


class Survey:
    """What the adaptive install does before its plan, over an in-memory leaves area: the
    survey with the index's top only, then the leaves of the chunks no slot matches."""

    def __init__(self, survey, fetched, ranges):
        self.survey, self.fetched, self.ranges = survey, fetched, ranges

    def __getattr__(self, name):
        return getattr(self.survey, name)


def surveyed(whole: BlockIndex, target: Path, active: Path, *, leaves: bytes | None = None,
             max_gap: int = 0) -> tuple[BlockIndex, Survey]:
    """(the top, with the leaves it needed, and the survey); `fetched` lists the chunks whose
    leaves were read, `leaves` stands for the artifact's leaves area."""
    top = BlockIndex.from_raw(whole.serialize())
    area = whole.encode_leaves() if leaves is None else leaves
    survey = survey_slots(top, target, active)
    fetched = []

    @contextmanager
    def open_range(start, end):
        fetched.extend(c for c in range(top.chunk_count)
                       if start <= top.leaf_span(c)[0] < end and survey.unknown[c])
        yield io.BytesIO(area[start:end])

    ranges = survey.leaf_ranges(top, 0, max_gap)
    survey.fetch_leaves(top, ranges, open_range)
    assert not any(survey.unknown) and all(top.known)
    return top, Survey(survey, fetched, ranges)


def test_the_two_levels_round_trip_and_only_non_zero_blocks_have_a_stored_leaf(tmp_path):
    image = bytes(old_image()) + b"tail" * 25  # 40 zero blocks; ends inside a block
    artifact = write(tmp_path, image)
    index, _, _, anchor = open_index(artifact)
    leaves = b"".join(block_digest(image[b * BLOCK:(b + 1) * BLOCK]) for b in range(201))
    whole = BlockIndex.of_leaves(BLOCK, 4, len(image), leaves, index.offsets)
    assert index.serialize() == whole.serialize() and index.hashes == whole.hashes
    assert anchor.size == len(index.encode()) and anchor.leaves == 161 * 16
    data = artifact.read_bytes()
    assert data[-anchor.area:] == whole.encode_leaves() + whole.encode()
    assert list(index.stored) == [1] * 80 + [0] * 40 + [1] * 81
    assert index.leaf_span(20) == (80 * 16, 80 * 16)  # chunk 20: zeros, no leaves
    assert index.top(3) == chunk_digest(leaves[12 * 16:16 * 16])
    # the top alone: a zero block's leaf is known, a chunk's others are not until accepted
    top = BlockIndex.parse(data[-anchor.size:], anchor)
    assert not any(top.known) and top.block_hash(90) == zero_digest(BLOCK)
    start, end = top.leaf_span(7)
    assert top.accept_leaves(7, data[-anchor.area + start:-anchor.area + end]) == \
        leaves[28 * 16:32 * 16]
    assert list(top.known).count(1) == 1 and top.block_hash(29) == leaves[29 * 16:30 * 16]
    with pytest.raises(StructureError, match="leaves of the signed header|says"):
        BlockIndex.parse(data[-anchor.size:], IndexAnchor(anchor.size, anchor.sha256, 16))


def test_a_tampered_top_entry_or_leaf_range_or_another_chunks_leaves_are_refused(tmp_path):
    artifact = write(tmp_path, bytes(old_image()))
    index, _, _, anchor = open_index(artifact)
    data = artifact.read_bytes()
    leaves = data[-anchor.area:-anchor.size]

    def chunk_leaves(chunk: int) -> bytes:
        start, end = index.leaf_span(chunk)
        return leaves[start:end]

    top = BlockIndex.parse(data[-anchor.size:], anchor)
    damaged = bytearray(chunk_leaves(5))
    damaged[3] ^= 1
    with pytest.raises(ChecksumError, match="leaves of chunk 5"):
        top.accept_leaves(5, bytes(damaged))
    with pytest.raises(ChecksumError, match="leaves of chunk 5"):
        top.accept_leaves(5, chunk_leaves(6))  # another chunk's: as long, not its
    with pytest.raises(StructureError, match="expected 64"):
        top.accept_leaves(5, chunk_leaves(5)[:-16])
    assert not top.known[5]
    # a top entry changed (the anchor aside: the signed header's sha256 would refuse it)
    raw = bytearray(top.serialize())
    raw[24 + index.block_count + 5 * 16] ^= 1
    forged = BlockIndex.from_raw(bytes(raw))
    with pytest.raises(ChecksumError, match="leaves of chunk 5"):
        forged.accept_leaves(5, chunk_leaves(5))
    with pytest.raises(ChecksumError, match="block index"):
        BlockIndex.parse(zlib.compress(bytes(raw)), IndexAnchor(
            len(zlib.compress(bytes(raw))), anchor.sha256, anchor.leaves))
    # a leaf damaged in the artifact file: read_index refuses it
    tampered = tmp_path / "tampered.mender"
    tampered.write_bytes(data[:-anchor.area + 40] + bytes([data[-anchor.area + 40] ^ 1])
                         + data[-anchor.area + 41:])
    with open(tampered, "rb") as stream, pytest.raises(ChecksumError, match="chunk 0"):
        read_index(stream, anchor)


def test_a_format_1_anchor_is_refused_in_one_clear_line():
    from artifact.errors import UnsupportedError
    from artifact.header import PayloadHeader

    payload = PayloadHeader(index=0, type="rootfs-image", meta_data={
        ANCHOR: {"format": 1, "size": 100, "sha256": "0" * 64}})
    with pytest.raises(UnsupportedError, match="block index format 1, this reader reads "
                                                "format 2 only"):
        IndexAnchor.from_payload(payload)


def test_a_chunk_that_a_slot_matches_in_place_needs_no_leaves(tmp_path):
    old, new = old_and_changed_image()
    artifact = write(tmp_path, bytes(new))
    whole, offset, _, anchor = open_index(artifact)
    active, target = tmp_path / "active", tmp_path / "target"
    active.write_bytes(old)
    target.write_bytes(bytes(len(old)))  # erased: matches the zero chunks
    index, survey = surveyed(whole, target, active)
    assert survey.fetched == [0, 2, 25, 37]
    assert index.hashes == whole.hashes
    assert sum(survey.same) == (50 - 4) * 4  # the other chunks (zeros too), in place
    result = plan_fetch(index, offset, survey.active.find, artifact_size=artifact.stat().st_size,
                        index_size=anchor.area, index_fetched=anchor.size + 4 * 64,
                        held=survey.held, same=survey.same)
    assert [(r.first, r.last) for r in result.ranges] == [(0, 0), (2, 2), (25, 25), (37, 37)]
    assert result.head_bytes == offset + 512 + anchor.size + 4 * 64
    # with the new image half written in the target slot, its chunks match there
    target.write_bytes(bytes(new[:100 * BLOCK]) + bytes(len(old) - 100 * BLOCK))
    _, resumed = surveyed(whole, target, active)
    assert resumed.fetched == [25, 37] and sum(resumed.held[:100]) == 100
    # with the gap rule, the leaf ranges of nearby chunks are one range
    assert [(r.first, r.last) for r in resumed.ranges] == [(25, 25), (37, 37)]
    _, bridged = surveyed(whole, target, active, max_gap=BLOCK)
    assert bridged.fetched == [25, 37]
    assert [(r.first, r.last) for r in bridged.ranges] == [(25, 37)]
