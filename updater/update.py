"""The update in flight: what the agent knows of it so far, stored with the state before
each step (`agent/statestore.py`), so a process that starts after a reboot or a power cut
goes on with it."""
import time
from dataclasses import asdict, dataclass, field, fields

LogLine = dict[str, str]  # {timestamp, level, message}: Mender's deployment log format


@dataclass
class Update:
    source: str  # a file or an http(s) URL
    artifact_name: str | None = None  # the deployment's, then the artifact header's
    deployment_id: str | None = None  # the daemon's deployments; None: standalone
    kind: str | None = None  # the installer that took the payload: "rootfs" | "module"
    payload_type: str | None = None
    from_slot: str | None = None  # rootfs: the running slot, and the one to roll back to
    to_slot: str | None = None
    needs_reboot: bool | None = None
    supports_rollback: bool | None = None
    previous_provides: dict[str, str] | None = None
    provides: dict[str, str] | None = None  # in force after the commit
    boot_id: str | None = None  # at the reboot: a different one tells that it happened
    status: str | None = None  # None, "success" or "failure"
    error: str | None = None  # the first
    health: list[str] | None = None  # the health checks' output
    log: list[LogLine] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    paused: bool = False  # stopped before a state: waits for a command or the daemon

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict) -> "Update":
        """Also reads the update of a format 1 store: the same names, without those it
        had not set (boot_id, deployment_id, paused)."""
        unknown = set(document) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"unknown update fields: {', '.join(sorted(unknown))}")
        return cls(**document)
