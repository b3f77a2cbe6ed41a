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
"""
import os
import stat
import zlib

from .. import failpoints, markers
from ..update import Update
from .installer import Installer
from .slots import inactive_slot, running_slot, slot_devices

WRITE_SIZE = 1 << 20  # as Mender; the install peak RSS grows with it (bench.agent)
READ_SIZE = 1 << 20


class InstallError(Exception):
    """The payload cannot be written to, or read back from, the slot."""


def write_image(file, target: str, readback: bool = True) -> int:
    """Write `file` (a PayloadFile: iterating it verifies its checksum) to `target`."""
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError as error:
        raise InstallError(f"cannot open slot {target}: {error.strerror}") from None
    try:
        block_device = stat.S_ISBLK(os.fstat(fd).st_mode)
        if block_device:
            capacity = os.lseek(fd, 0, os.SEEK_END)
            os.lseek(fd, 0, os.SEEK_SET)
            if file.size > capacity:
                raise InstallError(f"payload {file.name} is {file.size} bytes, slot {target} "
                                   f"holds {capacity}")
        stream = CrcOf(file)
        written = _stream(fd, stream, markers.WriteProgress(file.size))
        if not block_device:
            os.ftruncate(fd, written)
        os.fsync(fd)
    finally:
        os.close(fd)
    if readback:
        actual = _crc_from_device(target, written)
        if actual != stream.crc:
            raise InstallError(f"slot {target} reads back CRC-32 {actual:08x}, expected "
                               f"{stream.crc:08x} (the verified payload's)")
    return written


class CrcOf:
    """The chunks of `chunks`, unchanged; `crc`: the CRC-32 of those yielded so far."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.crc = 0

    def __iter__(self):
        for chunk in self.chunks:
            self.crc = zlib.crc32(chunk, self.crc)
            yield chunk


def _stream(fd: int, chunks, progress: markers.WriteProgress) -> int:
    crash_at = failpoints.payload_offset()
    pending = bytearray()
    written = 0
    for chunk in chunks:
        pending += chunk
        if len(pending) >= WRITE_SIZE:
            size = len(pending) - len(pending) % WRITE_SIZE
            with memoryview(pending) as view:
                written += _write_all(fd, view[:size], written, crash_at)
            del pending[:size]
            progress.update(written)
    with memoryview(pending) as view:
        written += _write_all(fd, view, written, crash_at)
    progress.update(written)
    return written


def _write_all(fd: int, data: memoryview, offset: int, crash_at: int | None) -> int:
    if crash_at is not None and offset <= crash_at <= offset + len(data):
        os.write(fd, data[: crash_at - offset])
        failpoints.crash(f"payload:{crash_at}")
    total = 0
    while total < len(data):
        total += os.write(fd, data[total:])
    return total


def _crc_from_device(target: str, size: int) -> int:
    crc = 0
    fd = os.open(target, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)  # read the medium, not the cache
        remaining = size
        while remaining:
            chunk = os.read(fd, min(READ_SIZE, remaining))
            if not chunk:
                raise InstallError(f"slot {target} ends after {size - remaining} bytes")
            crc = zlib.crc32(chunk, crc)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return crc


class RootfsInstaller(Installer):
    """rootfs-image: the payload goes to the inactive A/B slot, which boots on trial."""

    kind = "rootfs"

    def write_payload(self, update: Update, reader, payload) -> None:
        running, target = inactive_slot(self.config, self.context.bootloader)
        update.from_slot, update.to_slot = running, target
        device = slot_devices(self.config)[target]
        files = list(payload.header.files)
        if len(files) != 1:
            raise InstallError(f"rootfs-image payload has {len(files)} files; expected one")
        self.log(update, f"writing {files[0]} to slot {target} ({device}); running {running}")
        for file in payload.files():
            size = write_image(file, device, self.config.verify_readback)
            self.log(update, f"slot {target}: {size} bytes written and verified")

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
