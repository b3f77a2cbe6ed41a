"""How the updater talks to the bootloader: which slot boots next, trial boots, commit, rollback."""
from .base import BACKENDS, Bootloader, BootloaderError, make_bootloader

__all__ = ["BACKENDS", "Bootloader", "BootloaderError", "make_bootloader"]
