"""Standalone mode: install, commit, roll back and resume from the command line.

Each command loads the state store and runs the machine from where the command (or a
recovery after power loss) says; results are exit codes as Mender's: 0 done, 1 failed,
2 nothing to do; and `resume`'s own 3 (UPDATE_FAILED).
"""
import contextlib
import fcntl
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import failpoints, markers
from ..config import Config
from ..update import Update
from .machine import Machine
from .states import State
from .statestore import StateStore

S = State
OK, FAILED, NOTHING_TO_DO = 0, 1, 2
# resume only: the update it took up is over and failed; the device runs its previous
# artifact (rolled back, or never left it) and the failure is recorded (last-result.json;
# a deployment's goes to the server). A normal outcome, not an error of the command: the
# boot's tern-updater-resume.service counts it as a success (SuccessExitStatus).
UPDATE_FAILED = 3
# Stored states from which a user's commit or rollback applies.
PENDING = {S.ARTIFACT_REBOOT, S.ARTIFACT_VERIFY_REBOOT, S.ARTIFACT_COMMIT}
WAITING_FOR_ROLLBACK_REBOOT = {S.ARTIFACT_ROLLBACK_REBOOT, S.ARTIFACT_VERIFY_ROLLBACK_REBOOT}


@dataclass
class Outcome:
    code: int
    message: str
    state: State | None = None
    update: Update | None = None


class Busy(Exception):
    """Another tern-updater process holds the lock."""


class Standalone:
    def __init__(self, config: Config, quiet: bool = False, steps=None):
        """`steps`: a `steps.Steps`, by default the standalone ones; the daemon's talk to the
        server."""
        failpoints.arm(config.failpoints)
        markers.configure(config.console_markers)
        self.config = config
        self.store = StateStore(config.data / "state.json")
        if steps is None:
            # Only here: the steps bring the installers, bootloader and health checks, and
            # the idle daemon imports this module (Busy) without needing them.
            from ..bootloader import make_bootloader
            from ..source import ArtifactSource
            from .steps import Steps

            steps = Steps(config, make_bootloader(config), ArtifactSource(config), quiet)
        self.steps = steps
        self.machine = Machine(self.steps, self.store, config.max_store_count)

    @contextlib.contextmanager
    def exclusive(self, wait: float = 0.0, while_waiting: Callable[[], None] = lambda: None):
        """One updater at a time (a USB install must not race the boot-time resume).
        `wait`: seconds to wait for the lock before giving up, calling `while_waiting`
        between tries; the boot-time resume waits (feeding the watchdog), so that a
        command typed at boot (which refuses at once) never costs it the commit of a
        healthy update."""
        self.config.data.mkdir(parents=True, exist_ok=True)
        give_up = time.monotonic() + wait
        with open(self.config.data / "lock", "w") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:
                        raise Busy("another tern-updater is running") from None
                    while_waiting()
                    time.sleep(0.2)
            yield

    def install(self, location: str) -> Outcome:
        stored = self.store.load()
        if stored.state is not S.IDLE:
            return Outcome(FAILED, f"an update is in progress (state {stored.state}); "
                                   "commit, roll back or resume it first")
        update = Update(location, auto_reboot=self.config.auto_reboot)
        state = self.machine.run(S.DOWNLOAD, update, stop_before=frozenset({S.ARTIFACT_COMMIT}))
        return self._outcome(state, update)

    def commit(self) -> Outcome:
        stored = self.store.load()
        state, update = stored.state, stored.update
        if state not in PENDING:
            return Outcome(NOTHING_TO_DO, "nothing to commit")
        end = self.machine.resume(state, update, stored.store_count)
        if end is S.ARTIFACT_REBOOT:
            return Outcome(FAILED, "the device has not rebooted into the new artifact yet",
                           end, update)
        return self._outcome(end, update)

    def rollback(self) -> Outcome:
        stored = self.store.load()
        if stored.state not in PENDING:
            return Outcome(NOTHING_TO_DO, "nothing to roll back")
        update = stored.update
        self.steps.log(update, "rollback requested")
        update.error = update.error or "rolled back on request"
        end = self.machine.run(S.ARTIFACT_ROLLBACK, update, stored.store_count)
        if end is S.IDLE:
            return Outcome(OK, f"rolled back {update.artifact_name}", end, update)
        return self._outcome(end, update)

    def resume(self) -> Outcome:
        """On start (at boot): go on with an update that a reboot or power loss interrupted.

        The watchdog the initramfs started is fed from here on and stopped when the boot
        is healthy: unless this boot failed its trial and waits for the reboot into the
        previous artifact (the watchdog makes that reboot if nothing else does), or the
        updater failed on a trial boot (an error: the reset counts as a failed boot).
        It takes the lock itself, waiting for it up to `resume_lock_wait` while it keeps
        the watchdog fed: a command typed at boot must not cost a healthy update.
        """
        self.steps.watchdog.feed()
        try:
            with self.exclusive(self.config.resume_lock_wait, self.steps.watchdog.feed):
                outcome = self._resume()
        except Exception:
            if not self._on_trial():  # a reset would not help a committed slot
                self.steps.watchdog.disarm()
            raise
        if outcome.state not in WAITING_FOR_ROLLBACK_REBOOT:
            self.steps.watchdog.disarm()
        return outcome

    def _on_trial(self) -> bool:
        try:
            return self.steps.bootloader.trial_pending()
        except Exception:
            return True  # cannot tell: keep the watchdog armed

    def _resume(self) -> Outcome:
        stored = self.store.load()
        state, update = stored.state, stored.update
        if state is S.IDLE:
            return Outcome(NOTHING_TO_DO, "no update in progress")
        if state is S.UPDATE_STATUS_REPORT and update.paused:
            return Outcome(NOTHING_TO_DO, "the result waits for the daemon to report it")
        if update.paused:
            return Outcome(NOTHING_TO_DO, f"{update.artifact_name} is installed; "
                                          "waiting for commit or rollback")
        if state is S.DOWNLOAD:
            if update.deployment_id is not None:  # with a fresh link, once the network is up
                return Outcome(NOTHING_TO_DO, f"the daemon resumes the download of "
                                              f"deployment {update.deployment_id}", state, update)
            self.steps.watchdog.disarm()  # nothing is on trial; a download takes its time
        # A deployment's result is the daemon's to report, once the network is up.
        stop_before = frozenset({S.UPDATE_STATUS_REPORT}) if update.deployment_id is not None \
            else frozenset()
        end = self.machine.resume(state, update, stored.store_count, stop_before)
        outcome = self._outcome(end, update)
        if outcome.code == FAILED and end in (S.IDLE, S.UPDATE_STATUS_REPORT):
            outcome.code = UPDATE_FAILED
        return outcome

    def _outcome(self, state: State, update: Update) -> Outcome:
        name = update.artifact_name or update.source
        if state is S.IDLE:
            if update.status == "success":
                return Outcome(OK, f"{name}: installed and committed", state, update)
            return Outcome(FAILED, f"{name}: update failed: {update.error}", state, update)
        if state is S.UPDATE_STATUS_REPORT:
            return Outcome(OK if update.status == "success" else FAILED,
                           f"{name}: {update.status}: {update.error or 'committed'}; "
                           "the daemon reports it to the server", state, update)
        if state is S.ARTIFACT_COMMIT:
            return Outcome(OK, f"{name}: installed. Use 'commit' to update, or 'rollback' "
                               "to roll back the update.", state, update)
        if state is S.ARTIFACT_REBOOT:
            return Outcome(OK, f"{name}: installed into slot {update.to_slot or '-'}. "
                               "At the next reboot the device boots it on trial; it is "
                               "committed when the health checks pass.", state, update)
        if state in (S.ARTIFACT_ROLLBACK_REBOOT, S.ARTIFACT_VERIFY_ROLLBACK_REBOOT):
            return Outcome(FAILED, f"{name}: update failed: {update.error}; "
                                   "reboot to return to the previous artifact", state, update)
        return Outcome(FAILED, f"{name}: stopped in {state}", state, update)
