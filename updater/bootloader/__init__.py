"""How the updater talks to the bootloader: which slot boots next, trial boots, commit, rollback."""
from collections.abc import Callable

from ..config import Config
from . import file, uboot
from .base import Bootloader, BootloaderError, partition_number

# config.bootloader -> factory(config, parts)
BACKENDS: dict[str, Callable[..., Bootloader]] = {
    "uboot": uboot.from_config,
    "file": file.from_config,
}


def make_bootloader(config: Config) -> Bootloader:
    try:
        factory = BACKENDS[config.bootloader]
    except KeyError:
        raise BootloaderError(f"unknown bootloader {config.bootloader!r}; "
                              f"known: {', '.join(sorted(BACKENDS))}") from None
    parts = {"a": partition_number(config.rootfs_a), "b": partition_number(config.rootfs_b)}
    return factory(config, parts)


__all__ = ["BACKENDS", "Bootloader", "BootloaderError", "make_bootloader"]
