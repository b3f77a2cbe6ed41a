"""The daemon's steps of a deployment: the standalone steps, plus Sync and the conversation
with the server; every status goes through the status queue, so none is lost while the
server is out of reach. Imported when a deployment begins (`daemon.Daemon.standalone`):
with the steps come the installers, the bootloader and the health checks, which the idle
daemon never needs.
"""
import sys
import time

from ..bootloader import Bootloader
from ..client import Aborted, Client, ServerError
from ..config import Config
from ..install import INSTALLERS, InstallerFactory
from ..notify import Notifier
from ..source import ArtifactSource
from ..update import Update
from .states import Event, State
from .statusqueue import StatusQueue
from .steps import Reboot, Steps

S, E = State, Event
# What the server hears as the machine enters these states (Sync says "downloading").
STATUS = {S.ARTIFACT_INSTALL: "installing", S.ARTIFACT_REBOOT: "rebooting"}


class DaemonSteps(Steps):
    """The standalone steps, plus Sync and the conversation with the server."""

    def __init__(self, config: Config, bootloader: Bootloader, client: Client, quiet: bool = False,
                 *, source: ArtifactSource | None = None,
                 installers: dict[str, InstallerFactory] = INSTALLERS,
                 reboot: Reboot | None = None, notifier: Notifier | None = None):
        """`source`: by default the server's links, trusted as the client trusts the server.
        `notifier`: the daemon's, whose loop says WATCHDOG=1 too."""
        super().__init__(config, bootloader, source or ArtifactSource(config, client.verify),
                         quiet, installers=installers, reboot=reboot)
        self.client = client
        self.queue = StatusQueue(config.data / "status-queue.json",
                                 config.deployment_log_limit)
        self.abort_check_due = 0.0
        self.handlers[S.SYNC] = self.sync
        self.notifier = notifier or Notifier()  # systemd's watchdog hears the loop's progress

    def run(self, state: State, update: Update) -> Event:
        self.notifier.alive()
        if state in STATUS:
            try:
                self.report(update, STATUS[state])
            except Aborted:
                self.log(update, f"{state}: the deployment was aborted on the server", "error")
                update.error = update.error or "deployment aborted on the server"
                return E.FAILURE
        return super().run(state, update)

    def sync(self, update: Update) -> Event:
        if update.artifact_name == self.provides().get("artifact_name"):
            self.queue.push(update.deployment_id, "already-installed")
            self.send_statuses()
            return E.FAILURE  # back to Idle: nothing to do
        try:
            self.report(update, "downloading")
        except Aborted:
            return E.FAILURE  # aborted before it began: nothing to undo
        self.abort_check_due = time.monotonic() + self.config.abort_check_interval
        return E.SUCCESS

    def download_check(self, update: Update) -> None:
        """Every abort_check_interval of a download: "downloading" again, which the server
        refuses (409) once the deployment is aborted; then the download stops."""
        self.notifier.alive()  # runs before each read: the download makes progress
        if time.monotonic() < self.abort_check_due:
            return
        self.abort_check_due = time.monotonic() + self.config.abort_check_interval
        self.report(update, "downloading")

    def report(self, update: Update, status: str) -> None:
        """Queue the status and send what the queue holds; raise Aborted on a 409 for this
        deployment. Out of reach, the statuses stay queued and the update goes on."""
        self.queue.push(update.deployment_id, status)
        if update.deployment_id in self.send_statuses():
            raise Aborted("the deployment was aborted on the server")

    def send_statuses(self) -> set[str]:
        """The aborted deployments among those sent; errors are only printed."""
        try:
            return self.queue.flush(self.client)
        except ServerError as error:  # unreachable too
            if not self.quiet:
                print(f"tern-updater: statuses queued, not sent yet: {error}",
                      file=sys.stderr, flush=True)
            return set()

    def update_status_report(self, update: Update) -> Event:
        """The result and the full log join the queue; the daemon sends it until the
        server has it, across reboots."""
        super().update_status_report(update)
        self.queue.push(update.deployment_id, update.status, update.log)
        self.send_statuses()
        return E.SUCCESS
