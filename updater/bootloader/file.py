"""A file stands in for the bootloader: for tests and simulated devices.

The file holds the same variables as U-Boot's environment (`name=value` lines).
"""
import os
from pathlib import Path

from ..config import Config
from .base import MenderVariables


class FileBootloader(MenderVariables):
    def __init__(self, path: str | Path, parts: dict[str, str]):
        super().__init__(parts)
        self.path = Path(path)
        if not self.path.exists():  # a factory-fresh device boots slot a
            self.rollback("a")
            self.write({"bootlimit": "1"})

    def read(self) -> dict[str, str]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def write(self, changes: dict[str, str]) -> None:
        variables = {**self.read(), **changes}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as file:
            file.write("".join(f"{k}={v}\n" for k, v in variables.items()))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)


def from_config(config: Config, parts: dict[str, str]) -> FileBootloader:
    return FileBootloader(config.bootloader_env, parts)
