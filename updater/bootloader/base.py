"""The bootloader interface, over Mender's variables as the boot script reads them.

    mender_boot_part      partition number of the slot to boot ("2", "3", ...)
    mender_boot_part_hex  the same in hex (U-Boot's load commands want hex)
    upgrade_available     "1" while a trial boot is pending
    bootcount             trial boots so far; the boot script rolls back when > bootlimit

Slots are named "a" and "b"; a backend maps them to partition numbers.
"""
import re
from typing import Protocol

SLOTS = ("a", "b")


class BootloaderError(Exception):
    """The boot environment cannot be read or written, or names no known slot."""


class Bootloader(Protocol):
    def boot_slot(self) -> str:
        """The slot the next boot starts (after any pending trial is counted)."""

    def trial_pending(self) -> bool:
        """True between `set_trial` and `commit`/`rollback` (upgrade_available=1)."""

    def set_trial(self, slot: str) -> None:
        """Boot `slot` next, once: without a commit the boot script falls back."""

    def commit(self) -> None:
        """Make the running trial slot permanent."""

    def rollback(self, slot: str) -> None:
        """Boot `slot` (the known good one) from now on; idempotent."""


def other_slot(slot: str) -> str:
    return "b" if slot == "a" else "a"


def partition_number(device: str) -> str:
    """Mender's rule: a slot's partition number is the trailing digits of its device name
    (of a regular file's name also before an extension: `slot3.img` -> 3)."""
    match = re.search(r"(\d+)(\.[A-Za-z0-9]+)?$", device)
    if not match:
        raise BootloaderError(f"{device}: no partition number at the end of the name")
    return str(int(match.group(1)))


class MenderVariables:
    """The slot logic shared by the backends, over a `read()`/`write(changes)` environment."""

    def __init__(self, parts: dict[str, str]):
        if len(set(parts.values())) != 2:
            raise BootloaderError(f"slots need two distinct partition numbers, got {parts}")
        self.parts = parts

    def read(self) -> dict[str, str]:
        raise NotImplementedError

    def write(self, changes: dict[str, str]) -> None:
        raise NotImplementedError

    def boot_slot(self) -> str:
        part = self.read().get("mender_boot_part")
        for slot, number in self.parts.items():
            if part is not None and part.strip() == number:
                return slot
        raise BootloaderError(f"mender_boot_part={part!r} names neither slot {self.parts}")

    def trial_pending(self) -> bool:
        return self.read().get("upgrade_available", "0").strip() == "1"

    def set_trial(self, slot: str) -> None:
        self.write({**self._boot(slot), "upgrade_available": "1", "bootcount": "0"})

    def commit(self) -> None:
        self.write({"upgrade_available": "0", "bootcount": "0"})

    def rollback(self, slot: str) -> None:
        self.write({**self._boot(slot), "upgrade_available": "0", "bootcount": "0"})

    def _boot(self, slot: str) -> dict[str, str]:
        number = self.parts[slot]
        return {"mender_boot_part": number, "mender_boot_part_hex": f"{int(number):x}"}
