"""U-Boot's environment in Python, as libubootenv's fw_printenv/fw_setenv read and write it.

`fw_env.config` names one copy (single) or two (redundant), each as
`device offset size`. A copy is `crc32 (LE) | [flag byte] | "k=v\\0...\\0\\0" padding`;
the CRC covers everything after it. With two copies the valid one with the newer
flag is current (255 -> 0 wraps), and a write goes to the *other* copy with flag + 1,
so a torn write leaves the previous environment intact.
"""
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .. import failpoints
from ..config import Config
from .base import BootloaderError, MenderVariables


@dataclass(frozen=True)
class EnvCopy:
    device: str
    offset: int
    size: int


def read_fw_env_config(path: str | Path) -> list[EnvCopy]:
    copies = []
    for line in Path(path).read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 3:
            raise BootloaderError(f"{path}: expected 'device offset size', got {line!r}")
        copies.append(EnvCopy(fields[0], int(fields[1], 0), int(fields[2], 0)))
    if len(copies) not in (1, 2):
        raise BootloaderError(f"{path}: expected one or two environment copies, "
                              f"found {len(copies)}")
    return copies


class UBootEnv:
    """Reads and writes the whole environment; `write` merges changes into the current one."""

    def __init__(self, copies: list[EnvCopy]):
        self.copies = copies
        self.redundant = len(copies) == 2

    def read(self) -> dict[str, str]:
        current = self._current()
        return dict(current[2]) if current else {}

    def write(self, changes: dict[str, str | None]) -> None:
        """Apply `changes` (None deletes a variable) and write one copy, fsynced."""
        current = self._current()
        variables = dict(current[2]) if current else {}
        for name, value in changes.items():
            if value is None:
                variables.pop(name, None)
            else:
                variables[name] = value
        if not self.redundant:
            self._write_copy(self.copies[0], None, variables)
        elif current is None:
            self._write_copy(self.copies[0], 1, variables)
        else:
            index, flag, _ = current
            self._write_copy(self.copies[1 - index], (flag + 1) & 0xFF, variables)

    def _current(self) -> tuple[int, int, dict[str, str]] | None:
        """(copy index, flag, variables) of the copy in force, None when no copy is valid."""
        valid = [(i, *parsed) for i, copy in enumerate(self.copies)
                 if (parsed := self._read_copy(copy)) is not None]
        if len(valid) == 2:
            (_, flag0, _), (_, flag1, _) = valid
            if flag0 == 0xFF and flag1 == 0:
                return valid[1]
            if flag1 == 0xFF and flag0 == 0:
                return valid[0]
            return valid[0] if flag0 >= flag1 else valid[1]
        return valid[0] if valid else None

    def _header_size(self) -> int:
        return 5 if self.redundant else 4

    def _read_copy(self, copy: EnvCopy) -> tuple[int, dict[str, str]] | None:
        try:
            with open(copy.device, "rb") as device:
                device.seek(copy.offset)
                raw = device.read(copy.size)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BootloaderError(f"{copy.device}: {error}") from None
        if len(raw) != copy.size:
            return None
        data = raw[self._header_size():]
        if struct.unpack("<I", raw[:4])[0] != zlib.crc32(data):
            return None
        flag = raw[4] if self.redundant else 0
        variables = {}
        for entry in data.split(b"\0\0", 1)[0].split(b"\0"):
            name, sep, value = entry.decode("utf-8", "replace").partition("=")
            if sep:
                variables[name] = value
        return flag, variables

    def _write_copy(self, copy: EnvCopy, flag: int | None, variables: dict[str, str]) -> None:
        body = b"".join(f"{k}={v}\0".encode() for k, v in variables.items()) + b"\0"
        data_size = copy.size - self._header_size()
        if len(body) > data_size:
            raise BootloaderError(f"environment of {len(body)} bytes does not fit {data_size}")
        data = body.ljust(data_size, b"\xff")
        raw = struct.pack("<I", zlib.crc32(data)) + (bytes([flag]) if flag is not None else b"")
        raw += data
        fd = os.open(copy.device, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if failpoints.armed("bootenv-torn-write"):
                os.pwrite(fd, raw[: len(raw) // 2], copy.offset)
                os.fsync(fd)
                failpoints.crash("bootenv-torn-write")
            os.pwrite(fd, raw, copy.offset)
            os.fsync(fd)
        finally:
            os.close(fd)


class UBootBootloader(MenderVariables):
    def __init__(self, env: UBootEnv, parts: dict[str, str]):
        super().__init__(parts)
        self.env = env

    def read(self) -> dict[str, str]:
        return self.env.read()

    def write(self, changes: dict[str, str]) -> None:
        self.env.write(changes)


def from_config(config: Config, parts: dict[str, str]) -> UBootBootloader:
    return UBootBootloader(UBootEnv(read_fw_env_config(config.fw_env_config)), parts)
