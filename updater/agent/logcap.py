"""Bounds on what the agent keeps of a deployment's log: a chatty health check or state
script must not grow the stored update without end, nor make the log too big for the
server to take (its bodies are capped at 1 MiB). What is cut is the middle: the head
tells what started, the tail what ended, and a line between says how much is missing."""
import json
import re

from ..update import LogLine

# The line that stands for the entries cut from a deployment log.
CUT = re.compile(r"\[tern-updater: (\d+) lines \((\d+) bytes\) of this log cut here\]")


def cap_text(text: str, limit: int) -> str:
    """`text` if it has at most `limit` bytes (UTF-8), else its head and tail of about
    `limit` / 2 bytes each, joined by a line that says how much was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    half = max(limit // 2, 1)
    cut = data[half:len(data) - half]
    lines = cut.count(b"\n")
    return (data[:half].decode(errors="ignore")
            + f"\n[... {len(cut)} bytes ({lines} lines) cut ...]\n"
            + data[len(data) - half:].decode(errors="ignore"))


def entry_size(entry: LogLine) -> int:
    """The entry's bytes in the JSON body of a log upload."""
    return len(json.dumps(entry).encode()) + 2


def cap_log(log: list[LogLine], limit: int) -> list[LogLine]:
    """`log` if its entries take at most `limit` bytes as JSON, else its head (up to half
    of `limit`), one CUT entry and its tail. Capping a capped log again keeps its head and
    adds to its CUT entry's counts. Each entry must fit in a quarter of `limit` (Steps.log
    caps the messages)."""
    sizes = [entry_size(entry) for entry in log]
    if sum(sizes) <= limit:
        return log
    marker_at = next((i for i, entry in enumerate(log) if CUT.fullmatch(entry["message"])),
                     None)
    if marker_at is None:
        head = used = cut_lines = cut_bytes = 0
        while used + sizes[head] <= limit // 2:
            used += sizes[head]
            head += 1
        rest = head
    else:
        head, rest = marker_at, marker_at + 1
        used = sum(sizes[:head])
        match = CUT.fullmatch(log[marker_at]["message"])
        cut_lines, cut_bytes = int(match[1]), int(match[2])
    budget = limit - used - 200  # the CUT entry's room
    tail = len(log)
    while tail > rest and budget - sizes[tail - 1] >= 0:
        budget -= sizes[tail - 1]
        tail -= 1
    cut = log[rest:tail]
    cut_lines += len(cut)
    cut_bytes += sum(len(entry["message"].encode()) for entry in cut)
    marker = {"timestamp": (cut[-1] if cut else log[head])["timestamp"], "level": "warning",
              "message": f"[tern-updater: {cut_lines} lines ({cut_bytes} bytes) "
                         "of this log cut here]"}
    return [*log[:head], marker, *log[tail:]]
