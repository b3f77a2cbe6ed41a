"""The rootfs-image installer: streams the payload into the inactive slot, boots it on trial,
commits it or rolls back to the running slot.

Writes are large and block-aligned (the last one may be short), the slot is fsynced,
and — when `verify_readback` — read back from the device, past the page cache, before
anything marks the slot bootable.

The read-back compares a CRC-32, not a second SHA-256: the stream's SHA-256 already proves
the bytes are the signed payload (the payload file raises at its end otherwise); the
read-back must prove the medium holds those bytes — a write lost or damaged on the way
(the driver, the flash, a short device), or a bug between the stream and `os.write`. The
CRC is taken of the chunks as the verified stream yields them, before any buffering, so
any such difference changes it (a burst up to 32 bits always, anything else but for a
2^-32 chance). Under emulation CRC-32 costs a fifth of SHA-256 (BENCHMARKS.md, bench.ota).

A download cut by power loss resumes: every `download_progress_interval` the write stops
at a point where the artifact can be read afresh (a gzip member's start), fsyncs the slot
and records a checkpoint — the artifact offset and the CRC-32 of the slot bytes before
it — in the state store (`update.progress`). After power-on, `resume_payload` re-reads the
kept prefix from the slot, past the page cache, checks it against those CRCs (that is the
prefix's read-back, for the same reason a CRC-32: the bytes were the verified stream's, the
check proves the medium kept them) and feeds it to the whole image's sha256, then downloads
the rest with HTTP Range from the last good checkpoint. The whole payload, prefix included,
is still checked against the signed manifest's sha256, and the rest is read back.

So a full install hashes each byte once with SHA-256 (the payload file's) and once with
CRC-32 as it streams (then once more as the read-back reads the slot): a checkpoint takes the
stream's running CRC at its offset from that same pass (`Recorder.crc32`), and a resumed
write's CRC goes on from the kept prefix's.
"""
import hashlib
import os
import stat
import zlib
from collections.abc import Callable, Iterator

from .. import failpoints, markers
from ..update import Checkpoint, Progress, Update
from .installer import CannotResume, Installer
from .medium import READ_SIZE, medium_chunks
from .slots import inactive_slot, running_slot, slot_devices

WRITE_SIZE = 1 << 20  # as Mender; the install peak RSS grows with it (bench.agent)


class InstallError(Exception):
    """The payload cannot be written to, or read back from, the slot."""


RestartPoint = Callable[[int], tuple[int, int] | None]


class Recorder:
    """Checkpoints of a slot write, at most one per `interval` bytes: at a restart point
    (data offset -> the artifact offset where reading can start afresh), with the CRC-32 of
    the image up to it, taken in the stream's one CRC pass (`crc32`); recorded once the
    write that holds it is fsynced, then saved with the update (`save`)."""

    def __init__(self, progress: Progress, interval: int, file_offset: int,
                 restart_point: RestartPoint, save: Callable[[], None]):
        self.progress = progress
        self.interval = interval
        self.file_offset = file_offset  # data offset of the image's first byte
        self.restart_point = restart_point
        self.save = save
        last = progress.checkpoints[-1] if progress.checkpoints else None
        self.last = last.image_offset if last else 0  # the last checkpoint's, pending or not
        self.pending: list[Checkpoint] = []  # placed, their bytes not yet written

    def crc32(self, chunk: bytes, offset: int, crc: int) -> int:
        """The CRC-32 of the image through `chunk` (at image `offset`) from `crc`, the
        image's before it; a checkpoint placed inside the chunk takes the CRC at its
        offset on the way."""
        end = offset + len(chunk)
        if end - self.last >= self.interval:
            point = self.restart_point(self.file_offset + end - 1)
            if point is not None:
                split = point[1] - self.file_offset
                if offset <= split and split - self.last >= self.interval:
                    with memoryview(chunk) as view:
                        crc = zlib.crc32(view[:split - offset], crc)
                        self.pending.append(Checkpoint(split, point[0], point[1], crc))
                        self.last = split
                        return zlib.crc32(view[split - offset:], crc)
        return zlib.crc32(chunk, crc)

    def after_write(self, fd: int, end: int) -> None:
        """Record the checkpoints before image offset `end`, now written."""
        written = [checkpoint for checkpoint in self.pending if checkpoint.image_offset <= end]
        if not written:
            return
        os.fsync(fd)  # the checkpoint's bytes are on the medium before it is recorded
        self.progress.checkpoints.extend(written)
        del self.pending[:len(written)]
        self.save()


def write_image(file, target: str, readback: bool = True, *, start: int = 0, crc: int = 0,
                recorder: Recorder | None = None) -> int:
    """Write `file` (a PayloadFile: iterating it verifies its checksum) to `target`; with
    `start`, `file` yields the bytes from that image offset on (those before it, whose
    CRC-32 is `crc`, were read back when the resume checked them against their
    checkpoints)."""
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError as error:
        raise InstallError(f"cannot open slot {target}: {error.strerror}") from None
    try:
        block_device = stat.S_ISBLK(os.fstat(fd).st_mode)
        if block_device:
            capacity = os.lseek(fd, 0, os.SEEK_END)
            if file.size > capacity:
                raise InstallError(f"payload {file.name} is {file.size} bytes, slot {target} "
                                   f"holds {capacity}")
        os.lseek(fd, start, os.SEEK_SET)
        stream = CrcOf(file, start, crc, recorder)
        written = _stream(fd, stream, markers.WriteProgress(file.size), start, recorder)
        if not block_device:
            os.ftruncate(fd, written)
        os.fsync(fd)
    finally:
        os.close(fd)
    if readback:
        actual = _crc_from_device(target, start, written, crc)
        if actual != stream.crc:
            raise InstallError(f"slot {target} reads back CRC-32 {actual:08x}, expected "
                               f"{stream.crc:08x} (the verified payload's, bytes {start} to "
                               f"{written})")
    return written


class CrcOf:
    """The chunks of `chunks`, the image's from offset `start`, unchanged; `crc`: the CRC-32
    of the image up to the last one yielded (given: the bytes' before `start`). The
    `recorder`'s checkpoints take their CRC from this pass."""

    def __init__(self, chunks, start: int = 0, crc: int = 0,
                 recorder: Recorder | None = None):
        self.chunks = chunks
        self.offset = start
        self.crc = crc
        self.recorder = recorder

    def __iter__(self):
        for chunk in self.chunks:
            if self.recorder is None:
                self.crc = zlib.crc32(chunk, self.crc)
            else:
                self.crc = self.recorder.crc32(chunk, self.offset, self.crc)
            self.offset += len(chunk)
            yield chunk


def _stream(fd: int, chunks, progress: markers.WriteProgress, start: int = 0,
            recorder: Recorder | None = None) -> int:
    """Writes WRITE_SIZE-aligned blocks from image offset `start`; returns the end."""
    crash_at = failpoints.payload_offset()
    pending = bytearray()
    written = start
    for chunk in chunks:
        pending += chunk
        block = WRITE_SIZE - written % WRITE_SIZE  # the first one up to an aligned offset
        if len(pending) >= block:
            size = block + (len(pending) - block) // WRITE_SIZE * WRITE_SIZE
            with memoryview(pending) as view:
                written += _write(fd, view[:size], written, crash_at, recorder)
            del pending[:size]
            progress.update(written)
    with memoryview(pending) as view:
        written += _write(fd, view, written, crash_at, recorder)
    progress.update(written)
    return written


def _write(fd: int, data: memoryview, offset: int, crash_at: int | None,
           recorder: Recorder | None) -> int:
    total = _write_all(fd, data, offset, crash_at)
    if recorder is not None:
        recorder.after_write(fd, offset + total)
    return total


def _write_all(fd: int, data: memoryview, offset: int, crash_at: int | None) -> int:
    if crash_at is not None and offset <= crash_at <= offset + len(data):
        os.write(fd, data[: crash_at - offset])
        failpoints.crash(f"payload:{crash_at}")
    total = 0
    while total < len(data):
        total += os.write(fd, data[total:])
    return total


def _crc_from_device(target: str, start: int, end: int, crc: int = 0) -> int:
    """The CRC-32 of the slot's bytes [start, end) as the medium holds them, from `crc` (the
    bytes' before them)."""
    position = start
    for chunk in medium_chunks(target, start, end):
        crc = zlib.crc32(chunk, crc)
        position += len(chunk)
    if position < end:
        raise InstallError(f"slot {target} ends after {position} bytes")
    return crc


class RootfsInstaller(Installer):
    """rootfs-image: the payload goes to the inactive A/B slot, which boots on trial."""

    kind = "rootfs"
    install_repeats = True  # it only sets the trial boot in the environment

    def write_payload(self, update: Update, reader, payload) -> None:
        running, target = inactive_slot(self.config, self.context.bootloader)
        update.from_slot, update.to_slot = running, target
        device = slot_devices(self.config)[target]
        files = list(payload.header.files)
        if len(files) != 1:
            raise InstallError(f"rootfs-image payload has {len(files)} files; expected one")
        self.log(update, f"writing {files[0]} to slot {target} ({device}); running {running}")
        for file in payload.files():
            recorder = None
            if update.progress is not None:
                update.progress.file, update.progress.file_size = file.name, file.size
                update.progress.file_offset = file.offset
                self.context.save(update)  # resumable, even if no checkpoint comes
                recorder = self._recorder(update, payload.restart_point)
            size = write_image(file, device, self.config.verify_readback,
                               recorder=recorder)
            self.log(update, f"slot {target}: {size} bytes written and verified")

    def write_adaptive(self, update: Update, reader, ranges) -> None:
        """Download, from the block index: the image's blocks from the slots where they are,
        the rest by Range from `ranges` (install.adaptive); raises adaptive.Fallback."""
        from . import adaptive  # only here: it imports the artifact library

        running, target = inactive_slot(self.config, self.context.bootloader)
        update.from_slot, update.to_slot = running, target
        devices = slot_devices(self.config)
        self.log(update, f"adaptive install into slot {target} ({devices[target]}); "
                         f"running {running}")
        size = adaptive.install(reader, ranges, target=devices[target],
                                active=devices[running],
                                max_share=self.config.delta_max_share,
                                sync_every=self.config.download_progress_interval,
                                log=lambda message: self.log(update, message))
        self.log(update, f"slot {target}: {size} bytes written and verified")

    def resume_payload(self, update: Update, reader, open_at) -> None:
        progress = update.progress
        running, target = inactive_slot(self.config, self.context.bootloader)
        if (running, target) != (update.from_slot, update.to_slot):
            raise CannotResume(f"the download was writing slot {update.to_slot}, the "
                               f"inactive slot is now {target}")
        if not progress.checkpoints:
            raise CannotResume("no checkpoint was recorded before the cut (one comes every "
                               "download_progress_interval bytes at the next gzip member; a "
                               "payload of a single gzip member, as mender-artifact writes "
                               "it, has none)")
        if any(checkpoint.crc32 is None for checkpoint in progress.checkpoints):
            raise CannotResume("the checkpoints were recorded by an older agent (a sha256 "
                               "each, no CRC-32)")
        expected = reader.manifest.get(f"data/0000/{progress.file}")
        if expected is None:
            raise CannotResume(f"the manifest has no {progress.file}")
        device = slot_devices(self.config)[target]
        kept, digest = _verified_prefix(device, progress.checkpoints)
        if kept is None:
            raise CannotResume(f"slot {target} no longer holds the bytes of the first "
                               "checkpoint")
        del progress.checkpoints[progress.checkpoints.index(kept) + 1:]
        self.context.save(update)
        self.log(update, f"resuming the download at byte {kept.artifact_offset}: slot "
                         f"{target} keeps {kept.image_offset} of {progress.file_size} bytes "
                         "(checked against the recorded CRC-32)")
        # Only here, as the download step imports the artifact reader: the boot-time resume
        # never needs it (tests/unit/updater/test_startup_imports.py).
        from artifact.compression import compression_of, decompressing_reader

        compression = compression_of(progress.member, "data/0000.tar")
        with open_at(kept.artifact_offset) as stream:
            data = decompressing_reader(compression, stream)
            rest = ResumedFile(progress, kept, compression, data, digest, expected)
            recorder = self._recorder(update, rest.restart_point)
            size = write_image(rest, device, self.config.verify_readback,
                               start=kept.image_offset, crc=kept.crc32, recorder=recorder)
        self.log(update, f"slot {target}: {size} bytes written and verified")

    def _recorder(self, update: Update, restart_point: RestartPoint) -> Recorder:
        return Recorder(update.progress, self.config.download_progress_interval,
                        update.progress.file_offset, restart_point,
                        lambda: self.context.save(update))

    def install(self, update: Update) -> None:
        self.context.bootloader.set_trial(update.to_slot)
        self.log(update, f"slot {update.to_slot} is the boot candidate (trial boot)")
        update.needs_reboot = True

    def verify_reboot(self, update: Update) -> bool:
        running = running_slot(self.config)
        if running == update.to_slot:
            return True
        bootloader = self.context.bootloader
        if bootloader.trial_pending() and bootloader.boot_slot() == update.to_slot:
            return False
        raise InstallError(f"the trial boot of slot {update.to_slot} failed: the "
                           f"bootloader fell back to slot {running}")

    def commit(self, update: Update) -> None:
        running = running_slot(self.config)
        if running != update.to_slot:
            raise InstallError(f"not running the new slot {update.to_slot} "
                               f"(running {running}): nothing to commit")
        if self.context.bootloader.trial_pending():
            self.context.bootloader.commit()

    def rollback(self, update: Update) -> bool:
        self.context.bootloader.rollback(update.from_slot)
        self.log(update, f"boot environment back on slot {update.from_slot}")
        return True

    def runs_previous(self, update: Update) -> bool:
        return running_slot(self.config) == update.from_slot


def _verified_prefix(device: str, checkpoints: list[Checkpoint]):
    """The last checkpoint whose slot bytes before it match its recorded CRC-32 (None if
    the first's do not), and the sha256 of the slot up to it: one read, one SHA-256 and one
    CRC-32 pass."""
    whole = hashlib.sha256()
    crc = 0
    kept = None
    position = 0
    for checkpoint in checkpoints:
        for chunk in medium_chunks(device, position, checkpoint.image_offset):
            crc = zlib.crc32(chunk, crc)
            whole.update(chunk)
        if crc != checkpoint.crc32:
            break
        kept, position = checkpoint, checkpoint.image_offset
        verified = whole.copy()
    return kept, (verified if kept else None)


class ResumedFile:
    """The payload file's bytes from a checkpoint on, read from the artifact's stream
    there; like a PayloadFile, the iteration raises ChecksumError instead of ending when
    the whole file (the kept prefix's `digest`, then these bytes) differs from the
    manifest."""

    def __init__(self, progress: Progress, kept: Checkpoint, compression: str, data, digest,
                 expected: str):
        self.compression = compression
        self.name = progress.file
        self.size = progress.file_size
        self.kept = kept
        self.data = data
        self.digest = digest
        self.expected = expected

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.size - self.kept.image_offset
        while remaining:
            chunk = self.data.read(min(READ_SIZE, remaining))
            if not chunk:
                raise InstallError(f"{self.name}: the artifact ends {remaining} bytes early")
            self.digest.update(chunk)
            remaining -= len(chunk)
            yield chunk
        actual = self.digest.hexdigest()
        if actual != self.expected:
            from artifact.errors import ChecksumError  # as the payload file raises

            raise ChecksumError(f"data/0000/{self.name}", self.expected, actual)

    def restart_point(self, offset: int) -> tuple[int, int] | None:
        """As PayloadReader.restart_point, for the stream that began at the checkpoint."""
        from artifact.compression import GzipMembersReader

        base = self.kept
        if isinstance(self.data, GzipMembersReader):
            compressed, decompressed = self.data.restart_point(offset - base.data_offset)
            return base.artifact_offset + compressed, base.data_offset + decompressed
        if self.compression == "none":
            return base.artifact_offset + offset - base.data_offset, offset
        return None
