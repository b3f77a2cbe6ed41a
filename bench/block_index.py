"""What a block index costs in an artifact, and what it would save: for each image, the
artifact without an index (Tern's writer, and Debian's mender-artifact as the baseline), with
one per chunk size (the index and the chunked payload's lost compression), and, for a pair of
images, the bytes a device holding the first would fetch for the second (the planner against
the old image: no emulated device, no network).

    .venv/bin/python -m bench.block_index build/images/release-1.ext4 build/images/release-2.ext4
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from artifact import ArtifactReader
from artifact.block_index import index_anchor, read_index
from artifact.block_plan import SlotHashes, plan_fetch
from artifact.block_writer import write_indexed_artifact
from artifact.header import ArtifactHeader
from artifact.payloads import PayloadOptions, Software, rootfs_image
from artifact.writer import write_artifact

DEVICE_TYPE = "qemu-arm64"


def write(image: Path, out: Path, chunk_size: int | None) -> float:
    source = rootfs_image(image, Software(version=image.stem), PayloadOptions())
    header = ArtifactHeader(name=image.stem, device_types=[DEVICE_TYPE], payloads=[])
    started = time.monotonic()
    with open(out, "wb") as stream:
        if chunk_size is None:
            write_artifact(stream, header, [source], compression="gzip")
        else:
            write_indexed_artifact(stream, header, source, compression="gzip",
                                   chunk_size=chunk_size)
    return time.monotonic() - started


def mender_artifact(image: Path, out: Path) -> float:
    started = time.monotonic()
    subprocess.run(["mender-artifact", "write", "rootfs-image", "-f", str(image), "-n",
                    image.stem, "-t", DEVICE_TYPE, "--compression", "gzip", "-o", str(out)],
                   check=True, capture_output=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path,
                        help="filesystem images; with two or more, each is also planned "
                             "from the one before it")
    parser.add_argument("--chunk-kib", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-block-index-") as tmp:
        work = Path(tmp)
        print("| image | artifact | size (bytes) | vs Tern without index | index (bytes) "
              "| index share | write (s) |")
        print("|---|---|---|---|---|---|---|")
        for image in args.images:
            mender = work / "mender.mender"
            seconds = mender_artifact(image, mender)
            row(image, "mender-artifact 3.9, gzip", mender.stat().st_size, None, None, seconds)
            plain = work / "plain.mender"
            seconds = write(image, plain, None)
            base = plain.stat().st_size
            row(image, "Tern, gzip, no index", base, base, None, seconds)
            for kib in args.chunk_kib:
                indexed = work / f"{image.stem}-{kib}.mender"
                seconds = write(image, indexed, kib << 10)
                with open(indexed, "rb") as stream, ArtifactReader(stream) as reader:
                    index_size = index_anchor(reader.header).area
                row(image, f"Tern, gzip, block index (4 KiB blocks, {kib} KiB chunks)",
                    indexed.stat().st_size, base, index_size, seconds)
        if len(args.images) > 1:
            print()
            print("| from | to | chunk | ranges | blocks local / zero / fetched "
                  "| bytes fetched | share of the full download |")
            print("|---|---|---|---|---|---|---|")
        for old, new in zip(args.images, args.images[1:], strict=False):
            lookup = SlotHashes.of_file(old, 4096)
            for kib in args.chunk_kib:
                indexed = work / f"{new.stem}-{kib}.mender"
                with open(indexed, "rb") as stream, ArtifactReader(stream) as reader:
                    anchor = index_anchor(reader.header)
                    plan = plan_fetch(read_index(stream, anchor), reader.payload_offset,
                                      lookup.find, artifact_size=indexed.stat().st_size,
                                      index_size=anchor.area)
                print(f"| {old.name} | {new.name} | {kib} KiB | {len(plan.ranges)} | "
                      f"{plan.blocks_local} / {plan.blocks_zero} / {plan.blocks_fetched} | "
                      f"{plan.total_bytes} | {plan.share:.1%} |")
    return 0


def row(image: Path, what: str, size: int, base: int | None, index_size: int | None,
        seconds: float) -> None:
    versus = f"{size / base - 1:+.2%}" if base and size != base else ("" if base is None
                                                                     else "—")
    index = "" if index_size is None else str(index_size)
    share = "" if index_size is None else f"{index_size / size:.2%}"
    print(f"| {image.name} | {what} | {size} | {versus} | {index} | {share} | {seconds:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
