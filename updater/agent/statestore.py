"""The state store: one JSON document, replaced atomically (`atomic.write_atomically`)
before each step; after power loss it holds either the previous document or the new one.
`store_count` counts the writes of one update; the machine fails an update that
passes the cap, which breaks reboot loops.

Format 2: {"version": 2, "state", "store_count", "update": Update's fields or null}.
Format 1 (tern-updater before the update was typed) has the same shape with an update
that omits the fields it had not set; a device updated in the middle of an update reads
it and goes on.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomically
from ..update import Update
from .states import State

VERSION = 2
READABLE = (1, 2)


@dataclass
class Stored:
    state: State
    store_count: int
    update: Update | None


class StateStore:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> Stored:
        """Idle with no update when there is no store."""
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return Stored(State.IDLE, 0, None)
        if document.get("version") not in READABLE:
            raise ValueError(f"{self.path}: state store version {document.get('version')!r}, "
                             f"expected one of {', '.join(map(str, READABLE))}")
        update = document["update"]
        return Stored(State(document["state"]), document["store_count"],
                      None if update is None else Update.from_json(update))

    def save(self, state: State, update: Update | None, store_count: int) -> None:
        document = {"version": VERSION, "state": state.value, "store_count": store_count,
                    "update": None if update is None else update.to_json()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(document, indent=1).encode(),
                         failpoint="store-before-rename")
