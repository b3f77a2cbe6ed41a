"""The transition table and the runner that walks it, storing each state before its step.

Standalone mode and the daemon share the runner and the steps; they differ in
where they start (Download here, Sync in the daemon), in the source the steps download
from, and in where they stop (`stop_before`).
"""
from .. import failpoints, markers
from ..update import Update
from .states import Event, State
from .statestore import StateStore

S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.SYNC, E.SUCCESS): S.DOWNLOAD,
    (S.SYNC, E.FAILURE): S.IDLE,
    (S.DOWNLOAD, E.SUCCESS): S.ARTIFACT_INSTALL,
    (S.DOWNLOAD, E.FAILURE): S.ARTIFACT_FAILURE,
    (S.DOWNLOAD, E.LOOP_DETECTED): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_INSTALL, E.SUCCESS): S.ARTIFACT_REBOOT,
    (S.ARTIFACT_INSTALL, E.NO_REBOOT): S.ARTIFACT_COMMIT,
    (S.ARTIFACT_INSTALL, E.FAILURE): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_INSTALL, E.LOOP_DETECTED): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_REBOOT, E.SUCCESS): S.ARTIFACT_VERIFY_REBOOT,
    (S.ARTIFACT_REBOOT, E.FAILURE): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_REBOOT, E.LOOP_DETECTED): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_VERIFY_REBOOT, E.SUCCESS): S.ARTIFACT_COMMIT,
    (S.ARTIFACT_VERIFY_REBOOT, E.NOT_REBOOTED): S.ARTIFACT_REBOOT,
    (S.ARTIFACT_VERIFY_REBOOT, E.FAILURE): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_VERIFY_REBOOT, E.LOOP_DETECTED): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_COMMIT, E.SUCCESS): S.CLEANUP,
    (S.ARTIFACT_COMMIT, E.FAILURE): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_COMMIT, E.LOOP_DETECTED): S.ARTIFACT_ROLLBACK,
    (S.ARTIFACT_ROLLBACK, E.SUCCESS): S.ARTIFACT_ROLLBACK_REBOOT,
    (S.ARTIFACT_ROLLBACK, E.NO_REBOOT): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_ROLLBACK, E.FAILURE): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_ROLLBACK, E.LOOP_DETECTED): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_ROLLBACK_REBOOT, E.SUCCESS): S.ARTIFACT_VERIFY_ROLLBACK_REBOOT,
    (S.ARTIFACT_ROLLBACK_REBOOT, E.FAILURE): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_ROLLBACK_REBOOT, E.LOOP_DETECTED): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_VERIFY_ROLLBACK_REBOOT, E.SUCCESS): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_VERIFY_ROLLBACK_REBOOT, E.NOT_REBOOTED): S.ARTIFACT_ROLLBACK_REBOOT,
    (S.ARTIFACT_VERIFY_ROLLBACK_REBOOT, E.FAILURE): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_VERIFY_ROLLBACK_REBOOT, E.LOOP_DETECTED): S.ARTIFACT_FAILURE,
    (S.ARTIFACT_FAILURE, E.SUCCESS): S.CLEANUP,
    (S.ARTIFACT_FAILURE, E.FAILURE): S.CLEANUP,
    (S.ARTIFACT_FAILURE, E.LOOP_DETECTED): S.CLEANUP,
    (S.CLEANUP, E.SUCCESS): S.UPDATE_STATUS_REPORT,
    (S.CLEANUP, E.FAILURE): S.UPDATE_STATUS_REPORT,
    (S.CLEANUP, E.LOOP_DETECTED): S.UPDATE_STATUS_REPORT,
    (S.UPDATE_STATUS_REPORT, E.SUCCESS): S.IDLE,
    (S.UPDATE_STATUS_REPORT, E.FAILURE): S.UPDATE_STATUS_REPORT,
    (S.UPDATE_STATUS_REPORT, E.LOOP_DETECTED): S.IDLE,
}

# Where a process that finds a stored state on start goes on. Steps are idempotent, so
# most states run again (a download goes on from its recorded progress); a reboot state
# is over once the process runs again; an interrupted install is rolled back unless the
# installer's install can simply run again (`Installer.install_repeats`: rootfs).
RECOVERY: dict[State, State] = {
    S.SYNC: S.IDLE,
    S.ARTIFACT_INSTALL: S.ARTIFACT_ROLLBACK,
    S.ARTIFACT_REBOOT: S.ARTIFACT_VERIFY_REBOOT,
    S.ARTIFACT_ROLLBACK_REBOOT: S.ARTIFACT_VERIFY_ROLLBACK_REBOOT,
}

# Each group of states gets its own multiple of the store-count cap, so that after a
# loop is broken the rollback, the failure handling and the report still get to run,
# and a loop in any of them ends too.
CAP_SHARE: dict[State, int] = {
    **dict.fromkeys([S.SYNC, S.DOWNLOAD, S.ARTIFACT_INSTALL, S.ARTIFACT_REBOOT,
                     S.ARTIFACT_VERIFY_REBOOT, S.ARTIFACT_COMMIT], 1),
    **dict.fromkeys([S.ARTIFACT_ROLLBACK, S.ARTIFACT_ROLLBACK_REBOOT,
                     S.ARTIFACT_VERIFY_ROLLBACK_REBOOT], 2),
    **dict.fromkeys([S.ARTIFACT_FAILURE, S.CLEANUP], 3),
    S.UPDATE_STATUS_REPORT: 4,
}



class Machine:
    def __init__(self, steps, store: StateStore, max_store_count: int):
        self.steps = steps
        self.store = store
        self.max_store_count = max_store_count
        self.at: tuple[State, int] = (S.IDLE, 0)  # the state running, its store count
        steps.save = self.save_progress

    def save_progress(self, update: Update) -> None:
        """A step's progress (a download's checkpoints), stored with its state: not a new
        store write for the cap, which counts states entered."""
        state, store_count = self.at
        self.store.save(state, update, store_count)

    def resume(self, stored: State, update: Update, store_count: int,
               stop_before: frozenset[State] = frozenset()) -> State:
        """Go on after the process ended in `stored` (a reboot, a crash, power loss)."""
        state = RECOVERY.get(stored, stored)
        if stored is S.ARTIFACT_INSTALL and self.steps.installer(update).install_repeats:
            state = stored
        if state != stored and state in (S.ARTIFACT_FAILURE, S.ARTIFACT_ROLLBACK):
            update.error = update.error or f"{stored}: interrupted (power loss or crash)"
        self.steps.log(update, f"resuming in {state} (stored: {stored})")
        return self.run(state, update, store_count, stop_before)

    def run(self, state: State, update: Update, store_count: int = 0,
            stop_before: frozenset[State] = frozenset()) -> State:
        """Walk the table from `state`; return Idle, or the state where it waits."""
        update.paused = False
        while state is not S.IDLE:
            if state in stop_before:
                update.paused = True
                self.store.save(state, update, store_count)
                return state
            store_count += 1
            self.store.save(state, update, store_count)
            markers.state(state)
            if store_count > self.max_store_count * CAP_SHARE[state]:
                event = E.LOOP_DETECTED
                message = (f"{state}: {store_count} state store writes, more than "
                           f"{self.max_store_count * CAP_SHARE[state]}: loop broken")
                self.steps.log(update, message)
                update.error = update.error or message
            else:
                failpoints.hit(f"before:{state}")
                self.at = (state, store_count)
                event = self.steps.run(state, update)
                failpoints.hit(f"after:{state}")
            if event is E.WAIT:
                self.store.save(state, update, store_count)
                return state
            state = TRANSITIONS[(state, event)]
        self.store.save(S.IDLE, None, 0)
        return S.IDLE
