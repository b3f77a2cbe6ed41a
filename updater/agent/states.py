"""Mender's state names and the events that move between them."""
from enum import StrEnum


class State(StrEnum):
    IDLE = "Idle"
    SYNC = "Sync"
    DOWNLOAD = "Download"
    ARTIFACT_INSTALL = "ArtifactInstall"
    ARTIFACT_REBOOT = "ArtifactReboot"
    ARTIFACT_VERIFY_REBOOT = "ArtifactVerifyReboot"
    ARTIFACT_COMMIT = "ArtifactCommit"
    ARTIFACT_ROLLBACK = "ArtifactRollback"
    ARTIFACT_ROLLBACK_REBOOT = "ArtifactRollbackReboot"
    ARTIFACT_VERIFY_ROLLBACK_REBOOT = "ArtifactVerifyRollbackReboot"
    ARTIFACT_FAILURE = "ArtifactFailure"
    CLEANUP = "Cleanup"
    UPDATE_STATUS_REPORT = "UpdateStatusReport"


class Event(StrEnum):
    SUCCESS = "Success"
    FAILURE = "Failure"
    NO_REBOOT = "NoReboot"  # the payload is in force without a reboot
    NOT_REBOOTED = "NotRebooted"  # the device still runs the slot it ran before the reboot
    WAIT = "Wait"  # stop here; the stored state continues later (a reboot, a user's commit)
    LOOP_DETECTED = "LoopDetected"  # the store-count cap was reached
