"""The rootfs-image installer: streams the payload into the inactive slot, boots it on trial,
commits it or rolls back to the running slot.

Writes are large and block-aligned (the last one may be short), the slot is fsynced,
and — when `verify_readback` — read back from the device, past the page cache, and
hashed against the manifest before anything marks the slot bootable.
"""
import hashlib
import os
import stat

from .. import failpoints, markers
from ..update import Update
from .installer import Installer
from .slots import inactive_slot, running_slot, slot_devices

WRITE_SIZE = 4 << 20
READ_SIZE = 4 << 20


class InstallError(Exception):
    """The payload cannot be written to, or read back from, the slot."""


def write_image(file, target: str, expected_sha256: str, readback: bool = True) -> int:
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
        written = _stream(fd, file, markers.WriteProgress(file.size))
        if not block_device:
            os.ftruncate(fd, written)
        os.fsync(fd)
    finally:
        os.close(fd)
    if readback:
        actual = _hash_from_device(target, written)
        if actual != expected_sha256:
            raise InstallError(f"slot {target} reads back sha256 {actual}, "
                               f"expected {expected_sha256}")
    return written


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


def _hash_from_device(target: str, size: int) -> str:
    digest = hashlib.sha256()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)  # read the medium, not the cache
        remaining = size
        while remaining:
            chunk = os.read(fd, min(READ_SIZE, remaining))
            if not chunk:
                raise InstallError(f"slot {target} ends after {size - remaining} bytes")
            digest.update(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


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
            expected = reader.manifest[f"data/{payload.index:04d}/{file.name}"]
            size = write_image(file, device, expected, self.config.verify_readback)
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
