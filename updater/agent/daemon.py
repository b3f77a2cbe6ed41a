"""Daemon mode: poll the server for a deployment and run it through the standalone
machine, from Sync; the server hears each status, the result and the log.

The deployment's id rides in the stored update, so a reboot or a power cut never loses a
result: `tern-updater resume` at boot takes the update as far as UpdateStatusReport and
stops there; the daemon reports from there, retrying until the server takes it.
"""
import dataclasses
import random
import sys
import time

import requests

from .. import identity
from ..bootloader import make_bootloader
from ..client import Aborted, Client, ServerError
from .standalone import ArtifactSource, Busy, Standalone
from .states import Event, State
from .steps import Steps, new_update

S, E = State, Event
# What the server hears as the machine enters these states (Sync says "downloading").
STATUS = {S.ARTIFACT_INSTALL: "installing", S.ARTIFACT_REBOOT: "rebooting"}
STATUS_ATTEMPTS = 3  # for the statuses above; the result is retried until it is taken


def jitter(seconds: float) -> float:
    """Spread a fleet's requests: ±10 %."""
    return seconds * random.uniform(0.9, 1.1)


class DaemonSteps(Steps):
    """The standalone steps, plus Sync and the conversation with the server."""

    def __init__(self, config, bootloader, client: Client, quiet: bool = False):
        super().__init__(config, bootloader, ArtifactSource(verify=client.verify), quiet)
        self.client = client
        self.handlers[S.SYNC] = self.sync

    def run(self, state: State, update: dict) -> Event:
        if state in STATUS:
            try:
                self.report(update, STATUS[state])
            except Aborted:
                self.log(update, f"{state}: the deployment was aborted on the server")
                update["error"] = update["error"] or "deployment aborted on the server"
                return E.FAILURE
        return super().run(state, update)

    def sync(self, update: dict) -> Event:
        if update["artifact_name"] == self.provides().get("artifact_name"):
            self.report(update, "already-installed")
            return E.FAILURE  # back to Idle: nothing to do
        self.report(update, "downloading")
        return E.SUCCESS

    def report(self, update: dict, status: str) -> None:
        """A few attempts; the result (not these) is what must reach the server."""
        for attempt in range(1, STATUS_ATTEMPTS + 1):
            try:
                self.client.report_status(update["deployment_id"], status)
                return
            except Aborted:
                raise
            except (requests.RequestException, ServerError) as error:
                self.log(update, f"status {status} not reported ({attempt}): {error}")
                time.sleep(min(self.config.retry_interval, 2 ** attempt))

    def update_status_report(self, update: dict) -> Event:
        super().update_status_report(update)
        try:
            # The log first: once the server shows the result, the log is there too.
            self.client.upload_log(update["deployment_id"], update["log"])
            self.client.report_status(update["deployment_id"], update["status"])
        except Aborted as error:
            self.log(update, f"the server did not take the result: {error}")
        except (requests.RequestException, ServerError) as error:
            if not self.quiet:
                print(f"tern-updater: reporting {update['status']} failed: {error}; "
                      "retrying", file=sys.stderr, flush=True)
            time.sleep(jitter(self.config.retry_interval))
            return E.FAILURE  # UpdateStatusReport again, up to the store-count cap
        return E.SUCCESS


class Daemon:
    def __init__(self, config):
        if not config.server_url:
            raise ValueError("the daemon needs server_url")
        self.config = dataclasses.replace(config, auto_reboot=True)
        self.client = Client(config.server_url, identity.device_key(config.data),
                             identity.identity(config), config.server_certificate)
        self.steps = DaemonSteps(self.config, make_bootloader(self.config), self.client)
        self.standalone = Standalone(self.config, steps=self.steps)

    inventory_due = 0.0  # monotonic time of the next inventory
    failures = 0  # errors in a row, for the backoff

    def run(self) -> None:
        """Forever: finish a stored deployment, send the inventory, poll, deploy."""
        while True:
            time.sleep(self.cycle())

    def cycle(self) -> float:
        """One round of `run`; returns the seconds to wait before the next. (The fleet
        simulator calls it from a thread pool and waits in asyncio.)"""
        try:
            self.finish_stored()
            if time.monotonic() >= self.inventory_due:
                self.client.send_inventory(identity.inventory(self.steps.device_type(),
                                                              self.steps.provides()))
                self.inventory_due = time.monotonic() + self.config.inventory_interval
            deployment = self.client.next_deployment(self.device_provides())
            self.failures = 0
            if deployment:
                self.deploy(deployment)
                self.inventory_due = 0.0  # the server sees the new artifact at once
                return 0.0
            return jitter(self.config.poll_interval)
        except (requests.RequestException, ServerError, Busy) as error:
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
        update = stored["update"]
        if stored["state"] == S.IDLE or "deployment_id" not in update:
            return
        with self.standalone.exclusive():
            self.standalone.machine.resume(State(stored["state"]), update,
                                           stored["store_count"])

    def deploy(self, deployment: dict) -> None:
        artifact = deployment["artifact"]
        with self.standalone.exclusive():
            if self.standalone.store.load()["state"] != S.IDLE:
                raise Busy("a standalone update is in progress; the deployment waits")
            update = new_update(artifact["source"]["uri"])
            update["deployment_id"] = deployment["id"]
            update["artifact_name"] = artifact["artifact_name"]
            self.steps.log(update, f"deployment {deployment['id']}: {update['artifact_name']}")
            self.standalone.machine.run(S.SYNC, update)
