"""What the agent asks of a payload type's installer, in the order of Mender's update
module states: Download, ArtifactInstall, ArtifactVerifyReboot, ArtifactCommit,
ArtifactRollback, ArtifactVerifyRollbackReboot, ArtifactFailure, Cleanup.

The agent (`agent/steps.py`) runs the states — scripts, reboots, health checks, provides,
the result — and hands each payload-specific part to the installer of the update's
payload type, chosen from a table the agent receives (`install.INSTALLERS`). Like a step,
every method is idempotent: after power loss it may run again. An installer keeps what
it must remember in the update, which is stored before each state.
"""
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ..bootloader import Bootloader
from ..config import Config
from ..update import Update


@dataclass(frozen=True)
class InstallContext:
    """What an installer works with; `log(update, message)` adds to the deployment log."""

    config: Config
    bootloader: Bootloader
    log: Callable[[Update, str], None]
    device_type: Callable[[], str]
    save: Callable[[Update], None] = lambda update: None  # store the update (its progress)


class Fallback(Exception):
    """An adaptive install is not done (the message says why): the full payload is streamed
    instead."""


STATS = "download stats "  # a deployment log line the server reads: STATS + JSON


def stats_line(mode: str, fetched: int, full: int) -> str:
    """The deployment log line that tells the server what the device downloaded: `mode`
    "adaptive" or "full", the bytes `fetched` and those of the `full` download."""
    return STATS + json.dumps({"mode": mode, "fetched": fetched, "full": full})


class CannotResume(Exception):
    """An interrupted download cannot go on from its checkpoints; it starts again."""


class Installer(ABC):
    kind: str  # recorded as `update.kind` once the installer takes the payload
    install_repeats = False  # an install cut by power loss runs again (else: rolled back)

    def __init__(self, context: InstallContext):
        self.context = context
        self.config = context.config

    def log(self, update: Update, message: str) -> None:
        self.context.log(update, message)

    @abstractmethod
    def write_payload(self, update: Update, reader, payload) -> None:
        """Download: take the payload's files from the artifact as it streams (iterating a
        file ends only once its checksum matched the signed manifest)."""

    def resume_payload(self, update: Update, reader, open_at) -> None:
        """Download after power loss, from `update.progress`: `reader` has read and
        verified the artifact's head only; `open_at(offset)` opens the artifact from
        that byte. Raises CannotResume when it must start again."""
        raise CannotResume(f"the {self.kind} installer does not resume downloads")

    def download(self, update: Update) -> None:
        """Download, once the whole artifact is read and verified."""
        return None

    @abstractmethod
    def install(self, update: Update) -> None:
        """ArtifactInstall; sets `update.needs_reboot` (and `supports_rollback`)."""

    def verify_reboot(self, update: Update) -> bool:
        """ArtifactVerifyReboot, after a reboot: is the new artifact running? False: not
        rebooted into it yet. Raises when the device came back on the old one."""
        return True

    @abstractmethod
    def commit(self, update: Update) -> None:
        """ArtifactCommit."""

    @abstractmethod
    def rollback(self, update: Update) -> bool:
        """ArtifactRollback; True when a reboot finishes the rollback."""

    def runs_previous(self, update: Update) -> bool | None:
        """ArtifactRollbackReboot / ArtifactVerifyRollbackReboot: does the previous artifact
        run? None: only a reboot tells."""
        return None

    def failure(self, update: Update) -> None:
        """ArtifactFailure."""
        return None

    def cleanup(self, update: Update) -> None:
        """Cleanup."""
        return None


class NoPayload(Installer):
    """The update failed before any installer took its payload: nothing to undo."""

    kind = "none"

    def write_payload(self, update: Update, reader, payload) -> None:
        raise AssertionError("NoPayload takes no payload")

    def install(self, update: Update) -> None:
        raise AssertionError("NoPayload installs nothing")

    def commit(self, update: Update) -> None:
        raise AssertionError("NoPayload commits nothing")

    def rollback(self, update: Update) -> bool:
        self.log(update, "nothing to roll back")
        return False


InstallerFactory = Callable[[InstallContext], Installer]
