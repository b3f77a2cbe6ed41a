"""Daemon mode: poll the server for a deployment and run it through the standalone
machine, from Sync; the server hears each status, the result and the log.

The deployment's id rides in the stored update, so a reboot or a power cut never loses a
result: `tern-updater resume` at boot takes the update as far as UpdateStatusReport and
stops there; the daemon queues the result from there. Statuses wait in the status queue
(a file beside the state store) until the server takes them, oldest first.

Between deployments the daemon holds only what a poll needs: the client, the state store,
the status queue and the device's own facts (`device`). The machine and the deployment's
steps (`daemonsteps`), with the installers, the bootloader and the health checks they
import, are made when a deployment begins: the idle daemon stays resident on the device,
and those modules are MiB it would hold between polls (BENCHMARKS.md).
"""
import dataclasses
import random
import sys
import time

from .. import identity
from ..client import Client, ServerError
from ..config import Config
from ..notify import Notifier
from ..tokens import TokenStore
from ..update import Update
from . import device
from .standalone import Busy, Standalone
from .states import State
from .statestore import StateStore
from .statusqueue import StatusQueue

S = State


def jitter(seconds: float) -> float:
    """Spread a fleet's requests: ±10 %."""
    return seconds * random.uniform(0.9, 1.1)


class Daemon:
    def __init__(self, config: Config, client: Client | None = None, steps=None):
        """`client` and `steps` (a `daemonsteps.DaemonSteps`): the fleet simulator's own; by
        default the device's, whose steps are made when the first deployment begins."""
        if not config.server_url:
            raise ValueError("the daemon needs server_url")
        self.config = dataclasses.replace(config, auto_reboot=True)
        self.client = client or Client(
            config.server_url, identity.ForkedSigner(config.data), identity.identity(config),
            config.server_certificate,
            tokens=TokenStore(config.data / "auth-token.json",
                              identity.device_key_file(config.data)))
        self.store = StateStore(self.config.data / "state.json")
        self.queue = StatusQueue(self.config.data / "status-queue.json",
                                 self.config.deployment_log_limit)
        self.notifier = steps.notifier if steps else Notifier()
        self.quiet = steps.quiet if steps else False
        self._steps = steps
        self._standalone: Standalone | None = None
        self.inventory_due = 0.0  # monotonic time of the next inventory
        self.failures = 0  # errors in a row, for the backoff

    @property
    def standalone(self) -> Standalone:
        """The machine and the deployment's steps, made when a deployment begins (or one
        stored before a reboot goes on), not before: the idle daemon never imports them."""
        if self._standalone is None:
            if self._steps is None:
                from ..bootloader import make_bootloader  # only here: a deployment begins
                from .daemonsteps import DaemonSteps

                self._steps = DaemonSteps(self.config, make_bootloader(self.config),
                                          self.client, notifier=self.notifier)
            self._standalone = Standalone(self.config, steps=self._steps)
        return self._standalone

    def run(self) -> None:
        """Forever: finish a stored deployment, send the inventory, poll, deploy. Under
        systemd (Type=notify, WatchdogSec=) it says READY=1 once, then WATCHDOG=1 from
        this loop only: at each round, state, download read and slice of the wait."""
        self.notifier.ready()
        while True:
            self.notifier.alive()
            self.notifier.sleep(self.cycle())

    def cycle(self) -> float:
        """One round of `run`; returns the seconds to wait before the next. (The fleet
        simulator calls it from a thread pool and waits in asyncio.)"""
        try:
            self.finish_stored()
            self.queue.flush(self.client)  # before anything new is asked
            if time.monotonic() >= self.inventory_due:
                self.client.send_inventory(identity.inventory(
                    device.device_type(self.config), device.provides(self.config),
                    adaptive=self.adaptive()))
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
            if not self.quiet:
                print(f"tern-updater: {error}; again in {delay:.0f} s", file=sys.stderr,
                      flush=True)
            return delay

    def device_provides(self) -> dict[str, str]:
        return {**device.provides(self.config), "device_type": device.device_type(self.config)}

    def adaptive(self) -> bool:
        """Does the agent install artifacts with a block index adaptively (the inventory's
        `delta_update`)? Its steps know, once made; before, the answer for the device's own
        installers (`install.INSTALLERS`: the rootfs one does), said here so that the idle
        daemon does not import them to ask."""
        if self._steps is not None:
            return self._steps.adaptive()
        return self.config.delta_max_share > 0

    def finish_stored(self) -> None:
        """An update of a deployment stored before a reboot or a crash: go on with it."""
        stored = self.store.load()
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
            self.standalone.steps.log(
                update, f"the server no longer offers deployment {update.deployment_id}; "
                        "resuming with the stored link", "warning")

    def deploy(self, deployment: dict) -> None:
        artifact = deployment["artifact"]
        with self.standalone.exclusive():
            if self.store.load().state is not S.IDLE:
                raise Busy("a standalone update is in progress; the deployment waits")
            update = Update(artifact["source"]["uri"], artifact_name=artifact["artifact_name"],
                            deployment_id=deployment["id"], auto_reboot=True)
            self.standalone.steps.log(update, f"deployment {deployment['id']}: "
                                              f"{update.artifact_name}")
            self.standalone.machine.run(S.SYNC, update)
