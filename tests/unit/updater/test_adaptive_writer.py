"""The adaptive install's slot writer: adjacent blocks gathered, the slot synced every
`sync_every` bytes written (what a power cut may cost), the console's write markers."""
import os

from updater import markers
from updater.install import adaptive

KiB = 1 << 10


def test_the_slot_is_synced_every_sync_every_bytes_and_each_write_announced(tmp_path,
                                                                              monkeypatch):
    console, slot = tmp_path / "console", tmp_path / "slot"
    slot.write_bytes(bytes(1024 * KiB))
    monkeypatch.setattr(markers, "_target", str(console))
    synced = []
    monkeypatch.setattr(adaptive.os, "fdatasync", lambda fd: synced.append(written()))
    fd = os.open(slot, os.O_RDWR)
    writer = adaptive.SlotWriter(fd, None, 256 * KiB, markers.WriteProgress(1024 * KiB))
    monkeypatch.setattr(adaptive, "WRITE_SIZE", 128 * KiB)

    def written() -> int:
        return sum(1 for byte in slot.read_bytes() if byte)

    try:
        for block in [*range(0, 160), *range(200, 256)]:  # 4 KiB blocks: two runs
            writer.write(block * 4 * KiB, b"\1" * 4 * KiB)
        writer.flush()
        writer.flush()  # nothing pending: no write, no marker
    finally:
        os.close(fd)
    # 128 KiB writes (the first run's five, then the second's 128 and 96): a sync once 256
    # KiB or more were written since the last
    assert synced == [256 * KiB, 512 * KiB, 768 * KiB]
    assert [line for line in console.read_text().splitlines()
            if line.startswith("tern-written: ")] == [
        f"tern-written: {offset * KiB}" for offset in (128, 256, 384, 512, 640, 928, 1024)]
    # the tenths are of the bytes written (864 KiB, a total of 1024 KiB): 80 % at the end
    assert [line for line in console.read_text().splitlines()
            if line.startswith("tern-write: ")] == [f"tern-write: {p}%" for p in range(10, 81, 10)]
