"""Artifacts as files named by their id in one directory; the server serves them itself."""
import os
from pathlib import Path
from typing import BinaryIO


class FilesystemStorage:
    def __init__(self, root: Path):
        self.root = root

    @property
    def staging_dir(self) -> Path:
        """The directory itself: `put` is then an atomic rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, staged: Path) -> None:
        staged.chmod(0o644)  # not the staging file's 0600: a front nginx may send it
        os.replace(staged, self.path(key))

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def download_url(self, key: str, seconds: int) -> None:
        return None
