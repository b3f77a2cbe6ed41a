"""The statuses the server has not taken yet: a JSON list next to the state store, replaced
atomically, so they survive reboots and power cuts; sent oldest first.

An entry is {deployment_id, status, log}: `log` (the deployment's messages) goes with the
final status and is uploaded just before it, so a server that shows the result has the
log too.
"""
import json
import sys
from pathlib import Path

from ..atomic import write_atomically
from ..client import Aborted, ServerError


class StatusQueue:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> list[dict]:
        try:
            return json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []

    def push(self, deployment_id: str, status: str, log: list[dict] | None = None) -> None:
        """Queue a status, unless it is queued already (a step run again after power loss)."""
        entries = self.load()
        if any(e["deployment_id"] == deployment_id and e["status"] == status for e in entries):
            return
        self._save([*entries, {"deployment_id": deployment_id, "status": status, "log": log}])

    def flush(self, client) -> set[str]:
        """Send the queue in order; return the deployments the server refused with 409
        (aborted, or already finished), whose entries are dropped. Network and server
        errors propagate and leave the rest queued; so does 401 (not accepted, yet)."""
        aborted = set()
        while entries := self.load():
            entry = entries[0]
            try:
                if entry["log"] is not None:
                    client.upload_log(entry["deployment_id"], entry["log"])
                client.report_status(entry["deployment_id"], entry["status"])
            except Aborted:
                aborted.add(entry["deployment_id"])
                entries = [e for e in entries if e["deployment_id"] != entry["deployment_id"]]
            except ServerError as error:
                if not error.permanent:
                    raise
                print(f"tern-updater: status {entry['status']} refused for good, dropped: "
                      f"{error}", file=sys.stderr, flush=True)
                entries = entries[1:]  # kept, it would block the queue forever
            else:
                entries = entries[1:]
            self._save(entries)
        return aborted

    def _save(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(entries).encode())
