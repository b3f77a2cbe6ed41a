"""HTTP Range on a stored artifact through a device's signed download link, from
`tern-server serve` itself (the filesystem storage): what a device that fetches only the blocks
it lacks asks for (the index at the end, then chunks), and how the odd requests are answered.
The S3 storage and nginx's X-Accel path have theirs in test_s3_storage.py and test_nginx.py."""
import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from artifact import ArtifactReader
from artifact.block_index import BlockIndex, IndexAnchor, index_anchor, verified_blocks
from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer

TERN_ARTIFACT = Path(sys.executable).with_name("tern-artifact")


def indexed_artifact(directory: Path, name: str = "rootfs-1.0") -> Path:
    """A rootfs-image artifact with a block index, for qemux86-64 (1.5 MiB image)."""
    image = directory / "rootfs.ext4"
    image.write_bytes(os.urandom(1 << 20) + bytes(512 << 10))
    out = directory / f"{name}.mender"
    subprocess.run([str(TERN_ARTIFACT), "write", "rootfs-image", "-f", str(image), "-n", name,
                    "-t", "qemux86-64", "-o", str(out), "--block-index", "--no-progress"],
                   check=True, capture_output=True)
    return out


def get(url: str, verify, range_header: str | None) -> requests.Response:
    headers = {"Range": range_header} if range_header else {}
    return requests.get(url, headers=headers, verify=verify, timeout=30)


def assert_partial(response: requests.Response, data: bytes, start: int, end: int) -> None:
    """A 206 with the bytes [start, end] (inclusive) of `data` and their Content-Range."""
    assert response.status_code == 206, response.text[:200]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert response.content == data[start:end + 1]


def fetch_index_and_a_chunk(url: str, verify, artifact: Path) -> None:
    """What an adaptive install does first: the index's top by a suffix range (checked
    against the signed header), one chunk's leaves (checked against the top), then the chunk
    by its offsets, decompressed and its blocks checked."""
    data = artifact.read_bytes()
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        anchor: IndexAnchor = index_anchor(reader.header)
        payload_offset, compression = reader.payload_offset, reader.compression
    tail = get(url, verify, f"bytes=-{anchor.size}")
    assert_partial(tail, data, len(data) - anchor.size, len(data) - 1)
    index = BlockIndex.parse(tail.content, anchor)
    start, end = (len(data) - anchor.area + x for x in index.leaf_span(5))
    leaves = get(url, verify, f"bytes={start}-{end - 1}")
    assert_partial(leaves, data, start, end - 1)
    index.accept_leaves(5, leaves.content)
    start, end = (payload_offset + 512 + x for x in index.chunk_span(5))
    chunk = get(url, verify, f"bytes={start}-{end - 1}")
    assert_partial(chunk, data, start, end - 1)
    blocks = dict(verified_blocks(index, 5, chunk.content, compression))
    assert sorted(blocks) == list(index.chunk_blocks_of(5))


def test_the_signed_link_serves_ranges_of_the_stored_artifact(tmp_path):
    artifact = indexed_artifact(tmp_path)
    data = artifact.read_bytes()
    with LiveServer(tmp_path / "data") as server:
        admin = ServerAdmin(server)
        admin.api("POST", "/artifacts", data=data)
        url = admin.download_link("rootfs-1.0")
        verify = server.certificate
        fetch_index_and_a_chunk(url, verify, artifact)
        assert_partial(get(url, verify, "bytes=1000-"), data, 1000, len(data) - 1)
        whole = get(url, verify, None)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["Accept-Ranges"] == "bytes"

        # Several ranges in one request: the whole artifact with a 200, never a multipart
        # body; a device must ask for one range per request (the planner's ranges are).
        several = get(url, verify, "bytes=0-9,100-109")
        assert several.status_code == 200 and several.content == data
        # A range past the end: 416, with the server's JSON error and the size.
        past = get(url, verify, f"bytes={len(data)}-")
        assert past.status_code == 416
        assert past.headers["Content-Type"] == "application/json"
        assert "error" in past.json()
        assert past.headers.get("Content-Range") == f"bytes */{len(data)}"
        # A bad link is refused whatever the range.
        forged = re.sub(r"signature=[0-9a-f]+", "signature=" + "0" * 64, url)
        refused = get(forged, verify, "bytes=0-9")
        assert refused.status_code == 403 and "signature" in refused.json()["error"]
