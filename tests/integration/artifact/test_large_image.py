"""A 4 GiB image goes through the writer and the reader in flat memory; a 1 GiB one with a
block index through its writer, the index reader and the planner."""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

IMAGE_SIZE = 4 << 30
MEMORY_CEILING_MB = 100

PEAK_MEMORY = textwrap.dedent("""
    def peak_memory_mb():  # VmHWM starts afresh at exec, unlike ru_maxrss
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
""")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY + textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_4_gib_image_round_trip_in_flat_memory(tmp_path):
    image = tmp_path / "rootfs.ext4"
    with open(image, "wb") as out:  # sparse, with a marker at both ends
        out.write(b"first-block")
        out.seek(IMAGE_SIZE - 10)
        out.write(b"last-bytes")
    artifact = tmp_path / "big.mender"

    written = run_python(f"""
        from pathlib import Path
        from artifact.header import ArtifactHeader
        from artifact.payloads import PayloadOptions, Software, rootfs_image
        from artifact.writer import write_artifact
        source = rootfs_image(Path({str(image)!r}), Software(version="big"), PayloadOptions())
        header = ArtifactHeader(name="big", device_types=["qemu-arm64"], payloads=[])
        with open({str(artifact)!r}, "wb") as out:
            write_artifact(out, header, [source], compression="gzip")
        print(peak_memory_mb())
    """)
    read = run_python(f"""
        from artifact import ArtifactReader
        size, first, last = 0, None, None
        with open({str(artifact)!r}, "rb") as stream, ArtifactReader(stream) as reader:
            for payload in reader.payloads():
                for file in payload.files():
                    for chunk in file:  # ends normally only when the sha256 matched
                        first = first or chunk[:11]
                        last = chunk[-10:]
                        size += len(chunk)
        print(size, first.decode(), last.decode(), peak_memory_mb())
    """)

    size, first, last, read_peak = read.split()
    assert (int(size), first, last) == (IMAGE_SIZE, "first-block", "last-bytes")
    assert float(written) < MEMORY_CEILING_MB, f"writer peaked at {written} MB"
    assert float(read_peak) < MEMORY_CEILING_MB, f"reader peaked at {read_peak} MB"


def test_a_block_index_of_a_1_gib_image_is_written_read_and_planned_in_flat_memory(tmp_path):
    size = 1 << 30
    image = tmp_path / "rootfs.ext4"
    with open(image, "wb") as out:  # sparse: zero blocks, one marked block at each end
        out.write(b"first-block")
        out.seek(size - 10)
        out.write(b"last-bytes")
    artifact = tmp_path / "indexed.mender"
    written = run_python(f"""
        from pathlib import Path
        from artifact.block_writer import write_indexed_artifact
        from artifact.header import ArtifactHeader
        from artifact.payloads import PayloadOptions, Software, rootfs_image
        source = rootfs_image(Path({str(image)!r}), Software(version="big"), PayloadOptions())
        header = ArtifactHeader(name="big", device_types=["qemu-arm64"], payloads=[])
        with open({str(artifact)!r}, "wb") as out:
            write_indexed_artifact(out, header, source, compression="gzip")
        print(peak_memory_mb())
    """)
    planned = run_python(f"""
        from artifact import ArtifactReader
        from artifact.block_index import index_anchor, read_index
        from artifact.block_plan import plan_fetch
        path = {str(artifact)!r}
        with open(path, "rb") as stream, ArtifactReader(stream) as reader:
            anchor = index_anchor(reader.header)
            index = read_index(stream, anchor)
            plan = plan_fetch(index, reader.payload_offset, lambda digest: None,
                              artifact_size=stream.seek(0, 2), index_size=anchor.area)
        print(index.block_count, plan.blocks_zero, len(plan.ranges), peak_memory_mb())
    """)
    blocks, zero, ranges, peak = planned.split()
    assert (int(blocks), int(zero), int(ranges)) == (size // 4096, size // 4096 - 2, 2)
    assert float(written) < MEMORY_CEILING_MB, f"writer peaked at {written} MB"
    assert float(peak) < MEMORY_CEILING_MB, f"index and plan peaked at {peak} MB"
