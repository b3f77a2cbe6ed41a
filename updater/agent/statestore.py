"""The state store: one JSON document, replaced atomically (`atomic.write_atomically`)
before each step; after power loss it holds either the previous document or the new one.
`store_count` counts the writes of one update; the machine fails an update that
passes the cap, which breaks reboot loops.
"""
import json
from pathlib import Path

from ..atomic import write_atomically
from .states import State

VERSION = 1


class StateStore:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict:
        """{version, state, store_count, update}; Idle with no update when there is no store."""
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"version": VERSION, "state": State.IDLE.value, "store_count": 0,
                    "update": None}
        if document.get("version") != VERSION:
            raise ValueError(f"{self.path}: state store version {document.get('version')!r}, "
                             f"expected {VERSION}")
        return document

    def save(self, state: State, update: dict | None, store_count: int) -> None:
        document = {"version": VERSION, "state": state.value, "store_count": store_count,
                    "update": update}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(document, indent=1).encode(),
                         failpoint="store-before-rename")
