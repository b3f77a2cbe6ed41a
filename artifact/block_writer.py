"""Writing a rootfs-image artifact with a block index (the layout is in `block_index`).

The image is read once: hashed (per block and whole), and compressed with a member per chunk
(compression.MembersWriter, the writer of the artifact's 1 MiB gzip members, with the chunk
as its member size) into a spool file, so that the index, its sha256 and the chunk offsets
are known before the header (which carries the anchor) is written. Memory stays flat: the block
hashes go to a temporary file; the top (a byte per block, 24 per chunk) stays in memory.
"""
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from array import array
from typing import BinaryIO

from . import signing
from .block_index import (
    CHUNK_COMPRESSIONS,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CHUNK_SIZE,
    HASH_SIZE,
    INDEX_LEVEL,
    MAX_BLOCK_SIZE,
    MAX_CHUNK_SIZE,
    BlockIndex,
    IndexAnchor,
    block_digest,
    chunk_digest,
    compress_chunk,
    top_bytes,
    zero_digest,
)
from .compression import SUFFIXES, MembersWriter
from .errors import ArtifactError, StructureError
from .header import ArtifactHeader
from .payloads import ROOTFS_IMAGE, PayloadSource
from .writer import (
    CHUNK,
    Progress,
    _check_inputs,
    _padding,
    _tar_header,
    _write_head,
)

BATCH = 1 << 20  # image bytes read at a time


def write_indexed_artifact(out: BinaryIO, header: ArtifactHeader, source: PayloadSource, *,
                           compression: str = "gzip",
                           signing_key: signing.PrivateKey | None = None,
                           block_size: int = DEFAULT_BLOCK_SIZE,
                           chunk_size: int = DEFAULT_CHUNK_SIZE,
                           progress: Progress | None = None) -> BlockIndex:
    """Write a rootfs-image artifact whose image also has a block index; return the index's
    top (no chunk's leaves are loaded)."""
    if source.header.type != ROOTFS_IMAGE:
        raise StructureError("a block index is for rootfs-image payloads")
    if compression not in CHUNK_COMPRESSIONS:
        raise StructureError(f"a block index needs {', '.join(CHUNK_COMPRESSIONS)} "
                             f"compression, not {compression}")
    _check_sizes(block_size, chunk_size)
    header.payloads = [source.header]
    _check_inputs(header, [source])
    progress = progress or (lambda _: None)
    [path] = source.paths
    with tempfile.TemporaryFile() as spool, tempfile.TemporaryFile() as hashes:
        image_sha256, image_size, offsets = _spool_chunks(path, spool, hashes, compression,
                                                          block_size, chunk_size, progress)
        data_size = spool.tell()
        with tempfile.TemporaryFile() as index_file:
            anchor, index = _write_index(index_file, block_size, chunk_size // block_size,
                                         image_size, offsets, hashes)
            source.header.meta_data = {**(source.header.meta_data or {}),
                                       **anchor.to_meta_data()}
            if source.checksum_provide:
                source.header.provides[source.checksum_provide] = image_sha256
            suffix = SUFFIXES[compression]
            _write_head(out, header, {f"data/0000/{path.name}": image_sha256}, compression,
                        signing_key)
            out.write(_tar_header(f"data/0000.tar{suffix}", data_size))
            spool.seek(0)
            shutil.copyfileobj(spool, out, CHUNK)
            out.write(_padding(data_size))
            out.write(b"\0" * 1024)
            index_file.seek(0)
            shutil.copyfileobj(index_file, out, CHUNK)
    out.flush()
    return index


def _check_sizes(block_size: int, chunk_size: int) -> None:
    if not 512 <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise StructureError(f"block size {block_size}: a power of two from 512 to "
                             f"{MAX_BLOCK_SIZE}")
    if chunk_size % block_size or not block_size <= chunk_size <= MAX_CHUNK_SIZE:
        raise StructureError(f"chunk size {chunk_size}: a multiple of the block size "
                             f"({block_size}), at most {MAX_CHUNK_SIZE}")


def _spool_chunks(path, spool: BinaryIO, hashes: BinaryIO, compression: str, block_size: int,
                  chunk_size: int, progress: Progress) -> tuple[str, int, array]:
    """Compress the inner tar into `spool` as independent members (compression.MembersWriter):
    its header, one member per chunk, its tail. Block hashes go to `hashes`; return the
    image's sha256, its size and the chunk offsets."""
    stat = path.stat()
    inner_header = _tar_header(path.name, stat.st_size, mode=stat.st_mode & 0o7777,
                               mtime=int(stat.st_mtime))
    offsets = array("Q")  # where each member ends: the header's, then each chunk's
    whole = hashlib.sha256()
    size = 0
    writer = MembersWriter(spool, max(1, len(os.sched_getaffinity(0))), member_size=chunk_size,
                           compress=lambda data: compress_chunk(compression, data),
                           on_member=offsets.append)
    with open(path, "rb") as image, writer:
        writer.write(inner_header)
        writer.end_member()
        while batch := image.read(BATCH):
            whole.update(batch)
            size += len(batch)
            with memoryview(batch) as view:
                hashes.write(b"".join(block_digest(view[i:i + block_size])
                                      for i in range(0, len(batch), block_size)))
            writer.write(batch)
            progress(len(batch))
        writer.end_member()  # the last chunk ends with the image
        writer.write(_padding(size) + b"\0" * (2 * tarfile.BLOCKSIZE))
    offsets.pop()  # the tail's end
    if size != stat.st_size:
        raise ArtifactError(f"{path}: changed while the artifact was being written")
    return whole.hexdigest(), size, offsets


def _write_index(out: BinaryIO, block_size: int, chunk_blocks: int, image_size: int,
                 offsets: array, hashes: BinaryIO) -> tuple[IndexAnchor, BlockIndex]:
    """Write the leaves (those of non-zero blocks, from the `hashes` file, chunk by chunk),
    then the top compressed; return the anchor and the top."""
    zero = zero_digest(block_size)
    block_count = -(-image_size // block_size)
    stored, tops = bytearray(), bytearray()
    leaves = 0
    hashes.seek(0)
    for first in range(0, block_count, chunk_blocks):
        chunk = hashes.read(min(chunk_blocks, block_count - first) * HASH_SIZE)
        tops += chunk_digest(chunk)
        for at in range(0, len(chunk), HASH_SIZE):
            leaf = chunk[at:at + HASH_SIZE]  # a short last block's is not a zero block's
            stored.append(leaf != zero)
            if stored[-1]:
                out.write(leaf)
                leaves += HASH_SIZE
    raw = top_bytes(block_size, chunk_blocks, image_size, stored, tops, offsets)
    top = zlib.compress(raw, INDEX_LEVEL)
    out.write(top)
    return IndexAnchor(len(top), hashlib.sha256(top).hexdigest(), leaves), \
        BlockIndex.from_raw(raw)
