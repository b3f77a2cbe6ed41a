"""The statuses the server has not taken yet: a JSON list next to the state store, replaced
atomically, so they survive reboots and power cuts; sent oldest first.

An entry is a status, {deployment_id, status}, or a deployment's log, {deployment_id, log}
(its messages), queued just before the final status, so a server that shows the result
has the log too. They are separate entries so that a log the server refuses (too big: 413)
costs the log only, never the result; and a log is capped to `log_limit` bytes when queued.
"""
import json
import sys
from pathlib import Path

from ..atomic import write_atomically
from ..client import Aborted, ServerError
from ..config import Config
from ..update import LogLine
from .logcap import cap_log


class StatusQueue:
    def __init__(self, path: Path, log_limit: int = Config.deployment_log_limit):
        self.path = path
        self.log_limit = log_limit

    def load(self) -> list[dict]:
        try:
            entries = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        return [part for entry in entries for part in split(entry)]

    def push(self, deployment_id: str, status: str, log: list[LogLine] | None = None) -> None:
        """Queue the log (if any) and the status, unless queued already (a step run again
        after power loss)."""
        entries = self.load()
        new = []
        if log is not None and not any(e["deployment_id"] == deployment_id and "log" in e
                                       for e in entries):
            new.append({"deployment_id": deployment_id, "log": cap_log(log, self.log_limit)})
        if not any(e["deployment_id"] == deployment_id and e.get("status") == status
                   for e in entries):
            new.append({"deployment_id": deployment_id, "status": status})
        if new:
            self._save([*entries, *new])

    def flush(self, client) -> set[str]:
        """Send the queue in order; return the deployments the server refused with 409
        (aborted, or already finished), whose entries are dropped. An entry refused for
        good (another 4xx: a log too big, a status it does not know) is dropped alone.
        Network and server errors propagate and leave the rest queued; so does 401 (not
        accepted, yet)."""
        aborted = set()
        while entries := self.load():
            entry = entries[0]
            try:
                if "log" in entry:
                    client.upload_log(entry["deployment_id"], entry["log"])
                else:
                    client.report_status(entry["deployment_id"], entry["status"])
            except Aborted:
                aborted.add(entry["deployment_id"])
                entries = [e for e in entries if e["deployment_id"] != entry["deployment_id"]]
            except ServerError as error:
                if not error.permanent:
                    raise
                what = "log" if "log" in entry else f"status {entry['status']}"
                print(f"tern-updater: {what} refused for good, dropped: {error}",
                      file=sys.stderr, flush=True)
                entries = entries[1:]  # kept, it would block the queue forever
            else:
                entries = entries[1:]
            self._save(entries)
        return aborted

    def _save(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(entries).encode())


def split(entry: dict) -> list[dict]:
    """A queue written before logs had entries of their own holds {deployment_id, status,
    log}: its log, then its status."""
    if "status" not in entry or "log" not in entry:
        return [entry]
    parts = [{"deployment_id": entry["deployment_id"], "status": entry["status"]}]
    if entry["log"] is not None:
        parts.insert(0, {"deployment_id": entry["deployment_id"], "log": entry["log"]})
    return parts
