"""The updater's own log file (`tern-updater --log FILE`, as the device's boot starts it):
each line is appended and synced before the next, so a power cut loses at most the lines
being written. A shell redirect is never synced, and on ext4 (delayed allocation) the file's
new size can reach the disk before its data: after a cut, NUL bytes where the lines were."""
import io
import os
import sys


class SyncedLog(io.TextIOBase):
    """A text stream (for sys.stdout and sys.stderr) that appends whole lines and syncs them;
    `flush` writes a partial line too."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.pending = ""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, text: str) -> int:
        lines, newline, self.pending = (self.pending + text).rpartition("\n")
        if newline:
            self._append(lines + newline)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            text, self.pending = self.pending, ""
            self._append(text)

    def _append(self, text: str) -> None:
        data = text.encode(errors="replace")
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)


def log_to(path: str) -> None:
    """This process's output, and its children's, goes to `path`, synced line by line."""
    log = SyncedLog(path)
    os.dup2(log.fd, 1)  # what children and the C level write goes there too, unsynced,
    os.dup2(log.fd, 2)  # but the next line's fsync syncs the file's data whole
    sys.stdout = sys.stderr = log
