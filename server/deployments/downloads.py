"""What a device downloaded for a deployment, as its agent reports it in the deployment log:
a line `download stats {"mode": "adaptive"|"full", "fetched": N, "full": M}` (the bytes it
fetched, and those of the full artifact). The server only reads it back from the stored
log; a log without such a line (Mender's client, an older agent) has none."""
import json
from dataclasses import dataclass

STATS = "download stats "
MODES = ("adaptive", "full")


@dataclass(frozen=True)
class DownloadStats:
    mode: str  # adaptive: from the block index, by Range; full: the whole artifact
    fetched: int
    full: int

    def to_json(self) -> dict:
        return {"mode": self.mode, "fetched": self.fetched, "full": self.full}


def download_stats(log: list[dict] | None) -> DownloadStats | None:
    """The last stats line of a stored deployment log, if a well-formed one is there."""
    for line in reversed(log or []):
        message = line.get("message", "")
        if not message.startswith(STATS):
            continue
        try:
            stats = json.loads(message[len(STATS):])
        except ValueError:
            return None
        if not isinstance(stats, dict) or stats.get("mode") not in MODES or not all(
                isinstance(stats.get(key), int) and not isinstance(stats.get(key), bool)
                and stats[key] >= 0 for key in ("fetched", "full")):
            return None
        return DownloadStats(stats["mode"], stats["fetched"], stats["full"])
    return None


def describe(stats: DownloadStats | None) -> str:
    """For the dashboard: `1.2 MiB of 96.0 MiB (adaptive)`."""
    if stats is None:
        return ""
    return f"{_size(stats.fetched)} of {_size(stats.full)} ({stats.mode})"


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB" and count < 1 << 30:
            return f"{count} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
