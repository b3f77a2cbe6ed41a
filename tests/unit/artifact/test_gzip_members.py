"""gzip written as several members: valid for every gzip reader, and each member's start is
a point where decompression (a download cut by power loss) can begin afresh."""
import gzip
import io
import os
import shutil
import subprocess

import pytest

from artifact import compression
from artifact.compression import GzipMembersReader, compressing_writer

DATA = os.urandom(2 << 20) + b"compressible " * 200_000 + b"tail"


def compressed(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with compressing_writer("gzip", buffer) as writer:
        writer.write(data[:12345])
        writer.write(data[12345:])
    return buffer.getvalue()


@pytest.fixture(params=["isal", "stdlib"])
def implementation(request, monkeypatch):
    """The device has no ISA-L: its stdlib path is tested as well."""
    if request.param == "stdlib":
        monkeypatch.setattr(compression, "igzip", None)
        monkeypatch.setattr(compression, "igzip_lib", None)
    return request.param


def test_members_are_one_gzip_stream_for_every_reader(implementation):
    data = compressed(DATA)
    starts = GzipMembersReader(io.BytesIO(data))
    assert starts.read() == DATA
    assert len(starts.starts) == -(-len(DATA) // compression.GZIP_MEMBER_SIZE)
    assert gzip.decompress(data) == DATA
    gunzip = subprocess.run([shutil.which("gzip"), "-dc"], input=data, capture_output=True,
                            check=True)
    assert gunzip.stdout == DATA


def test_decompression_starts_afresh_at_every_member(implementation):
    data = compressed(DATA)
    reader = GzipMembersReader(io.BytesIO(data))
    assert reader.read() == DATA
    for compressed_offset, offset in reader.starts:
        assert offset % compression.GZIP_MEMBER_SIZE == 0
        assert GzipMembersReader(io.BytesIO(data[compressed_offset:])).read() == DATA[offset:]
    second = reader.starts[1]
    assert reader.restart_point(second[1]) == second
    assert reader.restart_point(second[1] - 1) == reader.starts[0]


def test_truncated_and_corrupt_streams_are_errors(implementation):
    data = compressed(DATA)
    with pytest.raises(EOFError):
        GzipMembersReader(io.BytesIO(data[:-3])).read()
    corrupt = bytearray(data)
    corrupt[-6] ^= 1  # a member's CRC
    with pytest.raises(compression.DECOMPRESSION_ERRORS):
        GzipMembersReader(io.BytesIO(bytes(corrupt))).read()


def test_memory_stays_bounded_by_the_read_size(implementation):
    """A bomb (1 GiB of zeros in about 1 MiB) comes out a read's size at a time."""
    bomb = gzip.compress(b"\0" * (64 << 20), 9) * 16
    reader = GzipMembersReader(io.BytesIO(bomb))
    assert len(reader.read(1 << 20)) <= 1 << 20
    assert len(reader._input) <= compression.READ_SIZE  # and the decompressor holds less
