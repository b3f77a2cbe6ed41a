"""The update in flight: what the agent knows of it so far, stored with the state before
each step (`agent/statestore.py`), so a process that starts after a reboot or a power cut
goes on with it."""
import time
from dataclasses import asdict, dataclass, field, fields

LogLine = dict[str, str]  # {timestamp, level, message}: Mender's deployment log format


@dataclass
class Checkpoint:
    """Slot bytes [0, image_offset) are written and fsynced; the download can go on from
    `artifact_offset`, where decompression starts afresh (a gzip member's first byte).

    A CRC-32 is enough to tell that the slot still holds those bytes after a power cut: they
    were the verified stream's, and the whole image, this prefix included, is still checked
    against the signed manifest's sha256 at the end (install/rootfs.py)."""

    image_offset: int
    artifact_offset: int
    data_offset: int  # of image_offset's byte in the decompressed data archive
    # Of the slot's bytes [0, image_offset). None: an older agent's checkpoint (it kept the
    # sha256 of its segment), which this one cannot check: the download starts afresh.
    crc32: int | None

    @classmethod
    def from_json(cls, document: dict) -> "Checkpoint":
        """Also an older agent's checkpoint, with a sha256 and no crc32."""
        document = {key: value for key, value in document.items() if key != "sha256"}
        return cls(**{"crc32": None, **document})


@dataclass
class Progress:
    """How far a rootfs download got: after a power cut it resumes at the last checkpoint
    whose slot bytes still match (HTTP Range), instead of failing the update."""

    artifact_size: int | None  # as the server said; a changed artifact is not resumed
    etag: str | None
    head_size: int  # the artifact's bytes before the payload member's content
    member: str  # the payload member, e.g. data/0000.tar.gz
    file: str = ""  # the payload file, its size and its first byte's data offset
    file_size: int = 0
    file_offset: int = 0
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @classmethod
    def from_json(cls, document: dict) -> "Progress":
        checkpoints = [Checkpoint.from_json(item) for item in document.get("checkpoints", [])]
        return cls(**{**document, "checkpoints": checkpoints})


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
    progress: Progress | None = None  # a rootfs download's, while it runs
    # Reboot into the new slot without waiting (`install --auto-reboot`, every deployment):
    # stored, so that a `resume` after a cut in the install makes the reboot itself.
    auto_reboot: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict) -> "Update":
        """Also reads the update of a format 1 store: the same names, without those it
        had not set (boot_id, deployment_id, paused); and a store written before
        `auto_reboot` was recorded (False: the config's setting decides)."""
        unknown = set(document) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"unknown update fields: {', '.join(sorted(unknown))}")
        if document.get("progress") is not None:
            document = {**document, "progress": Progress.from_json(document["progress"])}
        return cls(**document)
