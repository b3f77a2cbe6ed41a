"""Daemon mode: poll the server for a deployment and run it through the standalone
machine, from Sync; the server hears each status, the result and the log.

The deployment's id rides in the stored update, so a reboot or a power cut never loses a
result: `tern-updater resume` at boot takes the update as far as UpdateStatusReport and
stops there; the daemon queues the result from there. Statuses wait in the status queue
(a file beside the state store) until the server takes them, oldest first.
"""
import dataclasses
import random
import sys
import time

from .. import identity
from ..bootloader import Bootloader, make_bootloader
from ..client import Aborted, Client, ServerError
from ..config import Config
from ..install import INSTALLERS, InstallerFactory
from ..notify import Notifier
from ..source import ArtifactSource
from ..tokens import TokenStore
from ..update import Update
from .standalone import Busy, Standalone
from .states import Event, State
from .statusqueue import StatusQueue
from .steps import Reboot, Steps

S, E = State, Event
# What the server hears as the machine enters these states (Sync says "downloading").
STATUS = {S.ARTIFACT_INSTALL: "installing", S.ARTIFACT_REBOOT: "rebooting"}


def jitter(seconds: float) -> float:
    """Spread a fleet's requests: ±10 %."""
    return seconds * random.uniform(0.9, 1.1)


class DaemonSteps(Steps):
    """The standalone steps, plus Sync and the conversation with the server: every status
    goes through the status queue, so none is lost while the server is out of reach."""

    def __init__(self, config: Config, bootloader: Bootloader, client: Client, quiet: bool = False,
                 *, source: ArtifactSource | None = None,
                 installers: dict[str, InstallerFactory] = INSTALLERS,
                 reboot: Reboot | None = None):
        """`source`: by default the server's links, trusted as the client trusts the server."""
        super().__init__(config, bootloader, source or ArtifactSource(config, client.verify),
                         quiet, installers=installers, reboot=reboot)
        self.client = client
        self.queue = StatusQueue(config.data / "status-queue.json",
                                 config.deployment_log_limit)
        self.abort_check_due = 0.0
        self.handlers[S.SYNC] = self.sync
        self.notifier = Notifier()  # systemd's watchdog hears the loop's progress

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


class Daemon:
    def __init__(self, config: Config, client: Client | None = None,
                 steps: DaemonSteps | None = None):
        """`client` and `steps`: the fleet simulator's own; by default the device's."""
        if not config.server_url:
            raise ValueError("the daemon needs server_url")
        self.config = dataclasses.replace(config, auto_reboot=True)
        self.client = client or Client(
            config.server_url, identity.ForkedSigner(config.data), identity.identity(config),
            config.server_certificate,
            tokens=TokenStore(config.data / "auth-token.json",
                              identity.device_key_file(config.data)))
        self.steps = steps or DaemonSteps(self.config, make_bootloader(self.config),
                                          self.client)
        self.standalone = Standalone(self.config, steps=self.steps)
        self.inventory_due = 0.0  # monotonic time of the next inventory
        self.failures = 0  # errors in a row, for the backoff

    def run(self) -> None:
        """Forever: finish a stored deployment, send the inventory, poll, deploy. Under
        systemd (Type=notify, WatchdogSec=) it says READY=1 once, then WATCHDOG=1 from
        this loop only: at each round, state, download read and slice of the wait."""
        notifier = self.steps.notifier
        notifier.ready()
        while True:
            notifier.alive()
            notifier.sleep(self.cycle())

    def cycle(self) -> float:
        """One round of `run`; returns the seconds to wait before the next. (The fleet
        simulator calls it from a thread pool and waits in asyncio.)"""
        try:
            self.finish_stored()
            self.steps.queue.flush(self.client)  # before anything new is asked
            if time.monotonic() >= self.inventory_due:
                self.client.send_inventory(identity.inventory(
                    self.steps.device_type(), self.steps.provides(),
                    adaptive=self.steps.adaptive()))
                self.inventory_due = time.monotonic() + self.config.inventory_interval
            deployment = self.client.next_deployment(self.device_provides())
            self.failures = 0
            if deployment:
                self.deploy(deployment)
                self.inventory_due = 0.0  # the server sees the new artifact at once
                return 0.0
            return jitter(self.config.poll_interval)
        except (ServerError, Busy) as error:
            self.failures += 1
            delay = jitter(min(self.config.retry_interval, 2 ** self.failures))
            if not self.steps.quiet:
                print(f"tern-updater: {error}; again in {delay:.0f} s", file=sys.stderr,
                      flush=True)
            return delay

    def device_provides(self) -> dict[str, str]:
        return {**self.steps.provides(), "device_type": self.steps.device_type()}

    def finish_stored(self) -> None:
        """An update of a deployment stored before a reboot or a crash: go on with it."""
        stored = self.standalone.store.load()
        if stored.state is S.IDLE or stored.update.deployment_id is None:
            return
        if stored.state is S.DOWNLOAD:
            self.refresh_link(stored.update)
        with self.standalone.exclusive():
            self.standalone.machine.resume(stored.state, stored.update, stored.store_count)

    def refresh_link(self, update: Update) -> None:
        """A download cut by power loss goes on with a fresh link (the stored one, signed,
        may have expired): the server offers the same deployment again until its result.
        Unreachable, this raises and the cycle tries again later."""
        deployment = self.client.next_deployment(self.device_provides())
        if deployment and deployment["id"] == update.deployment_id:
            update.source = deployment["artifact"]["source"]["uri"]
        else:
            self.steps.log(update, f"the server no longer offers deployment "
                                   f"{update.deployment_id}; resuming with the stored link",
                           "warning")

    def deploy(self, deployment: dict) -> None:
        artifact = deployment["artifact"]
        with self.standalone.exclusive():
            if self.standalone.store.load().state is not S.IDLE:
                raise Busy("a standalone update is in progress; the deployment waits")
            update = Update(artifact["source"]["uri"], artifact_name=artifact["artifact_name"],
                            deployment_id=deployment["id"], auto_reboot=True)
            self.steps.log(update, f"deployment {deployment['id']}: {update.artifact_name}")
            self.standalone.machine.run(S.SYNC, update)
