"""One simulated device: the real updater (machine, daemon steps, `file` bootloader) on
file-backed slots in a directory of its own.

Its "process" is the daemon's loop, one `cycle()` at a time. A reboot or an injected power
cut ends that process with an exception; `boot()` is the power-on after it: the boot
script on the bootloader file (boot count, fallback), then what the image's rcS does —
`tern-updater resume`, then a fresh daemon that reads everything from the device's files.
"""
import contextlib
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from cryptography.hazmat.primitives import serialization

from updater.agent.daemon import Daemon
from updater.agent.daemonsteps import DaemonSteps
from updater.agent.standalone import Standalone
from updater.agent.states import Event, State
from updater.agent.statestore import StateStore
from updater.agent.steps import Steps
from updater.bootloader import make_bootloader
from updater.bootloader.boot import power_on
from updater.client import Client, Unauthorized
from updater.config import Config
from updater.http import Answer
from updater.identity import KeySigner, device_key
from updater.install import INSTALLERS, InstallContext, RootfsInstaller
from updater.install.slots import inactive_slot, running_slot
from updater.source import ArtifactSource
from updater.update import Update

S, E = State, Event
FACTORY_ARTIFACT = "release-1"
# The states one update goes through on its way to success; power cuts strike in these.
UPDATE_STATES = (S.SYNC, S.DOWNLOAD, S.ARTIFACT_INSTALL, S.ARTIFACT_REBOOT,
                 S.ARTIFACT_VERIFY_REBOOT, S.ARTIFACT_COMMIT, S.CLEANUP,
                 S.UPDATE_STATUS_REPORT)
# Where a power cut strikes: before or after one of those states (after ArtifactReboot
# there is nothing: the reboot ends the process), or during the download.
CUT_POINTS = (*((when, state) for state in UPDATE_STATES for when in ("before", "after")
                if (when, state) != ("after", S.ARTIFACT_REBOOT)),
              ("during", S.DOWNLOAD))
CUT_AT_READ = 8  # a cut during the download: at this read of the artifact's stream
TRIAL_FAULTS = ("boot", "health")
TRANSIENT_FAULT = "health-once"  # fails the first trial's health check only: a retry succeeds


class Reboot(BaseException):
    """The updater rebooted the device: its process ends here (as `reboot` would end it).

    A BaseException, so that no step's error handling mistakes it for a failure."""


class PowerCut(BaseException):
    """An injected power cut: the process dies at this point."""


class WorkerSessions(threading.local):
    """One requests.Session — one pool of kept-alive HTTPS connections — per worker thread,
    shared by every device that thread happens to run (requests' Session is not
    thread-safe; its pool is what makes thousands of devices cheap)."""

    def __init__(self):
        self.session = requests.Session()

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        return self.session.request(method, url, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:
        return self.session.post(url, **kwargs)

    def get(self, url: str, **kwargs) -> requests.Response:
        return self.session.get(url, **kwargs)


class SessionTransport:
    """The updater's HTTP seam (`updater.http.Connections`' request and open) on the
    worker's pooled sessions: the device API calls and the downloads of a simulated fleet
    reuse its kept-alive connections. Errors are OSErrors, as the standard library's."""

    def __init__(self, sessions: WorkerSessions, verify: bool | str):
        self.sessions, self.verify = sessions, verify

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> Answer:
        response = self.sessions.request(method, url, data=body, headers=headers,
                                         timeout=timeout, verify=self.verify)
        return Answer(response.status_code, response.reason, response.headers,
                      response.content)

    def open(self, url: str, headers: dict[str, str], timeout: tuple[float, float]):
        response = self.sessions.get(url, headers=headers, stream=True, timeout=timeout,
                                     verify=self.verify)
        response.raw.decode_content = False
        return SessionStream(response)


class SessionStream:
    def __init__(self, response: requests.Response):
        self.response = response
        self.status, self.reason = response.status_code, response.reason
        self.headers = response.headers

    def read(self, size: int | None = None) -> bytes:
        try:
            return self.response.raw.read(size)
        except urllib3.exceptions.HTTPError as error:  # a broken connection's, not OSError
            raise OSError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        self.response.close()


@dataclass
class Faults:
    """What goes wrong on this device: its trial boot ("boot": the new slot never comes up;
    "health": it fails its health check; "health-once": only the first time), and a power
    cut (one of CUT_POINTS)."""

    trial: str | None = None
    power_cut: tuple[str, State] | None = None


@dataclass
class Settings:
    """What every device of a fleet shares."""

    server_url: str
    server_certificate: str = ""
    verify_keys: tuple[str, ...] = ()
    device_type: str = "tern-simulated"
    payload: str = "discard"  # or "write": into the slot file
    factory_image: str = ""  # a file slot A holds from the factory (default: a name line)
    poll_interval: float = 5.0
    retry_interval: float = 5.0
    inventory_interval: float = 3600.0
    fleet_id: int = 0  # 0-255, in every MAC: fleets side by side on one server differ


@dataclass
class Record:
    """What the fleet sees of a device (read by the asyncio side, written by workers)."""

    phase: str = "off"  # off, booting, polling, a machine state, done
    admission: str = "unknown"  # pending, accepted
    polls: int = 0
    power_cuts: int = 0
    reboots: int = 0
    update_started: float | None = None
    update_finished: float | None = None
    result: str | None = None  # the status the server took: success, failure, ...
    deployment_id: str | None = None
    attempts: int = 0  # results reported for deployment_id (a retry after a failure)
    error: str | None = None  # why the device's simulation crashed (a bug, not a fault)


def mac_address(fleet_id: int, index: int) -> str:
    """A locally administered unicast MAC: 02, the fleet's byte, the device's four."""
    return f"02:{fleet_id:02x}:" + ":".join(f"{byte:02x}" for byte in index.to_bytes(4, "big"))


class FleetDevice:
    """`delta`: the device installs an artifact with a block index adaptively (it announces
    `delta_update`, reads its slot files and writes slot b's); else it takes the full
    payload (`delta_max_share` 0), as a device whose agent has no adaptive install."""

    def __init__(self, root: Path, index: int, settings: Settings, sessions: WorkerSessions,
                 faults: Faults | None = None, delta: bool = False):
        self.root = root
        self.name = f"sim-{index:05d}"
        self.identity = {"mac": mac_address(settings.fleet_id, index)}
        self.settings = settings
        self.sessions = sessions
        self.faults = faults or Faults()
        self.delta = delta
        self.record = Record()
        self.daemon: FleetDaemon | None = None
        self.config = Config(
            data_dir=str(root / "data"), bootloader="file",
            bootloader_env=str(root / "bootenv"),
            rootfs_a=str(root / "slot2.img"), rootfs_b=str(root / "slot3.img"),
            device_type=settings.device_type, artifact_info=str(root / "artifact_info"),
            verify_keys=list(settings.verify_keys), cmdline_file=str(root / "cmdline"),
            boot_id_file=str(root / "boot_id"), auto_reboot=True,
            reboot_command="simulated", modules_dir=str(root / "modules"),
            scripts_dir=str(root / "scripts"), health_dir=str(root / "health.d"),
            watchdog_device="", server_url=settings.server_url,
            server_certificate=settings.server_certificate,
            poll_interval=settings.poll_interval, retry_interval=settings.retry_interval,
            inventory_interval=settings.inventory_interval,
            **({} if delta else {"delta_max_share": 0.0}))

    # -- the hardware ------------------------------------------------------------------------

    def manufacture(self) -> None:
        """A factory-fresh device: release-1 in slot A, its key made, never booted. A device
        an earlier run made (the same workdir) stays as it is."""
        if (self.config.data / "device-key.pem").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if self.settings.factory_image:
            shutil.copyfile(self.settings.factory_image, self.root / "slot2.img")
        else:
            (self.root / "slot2.img").write_bytes(f"{FACTORY_ARTIFACT}\n".encode())
        (self.root / "slot3.img").write_bytes(b"")
        (self.root / "artifact_info").write_text(f"artifact_name={FACTORY_ARTIFACT}\n")
        if self.faults.trial in ("health", TRANSIENT_FAULT):
            health = self.root / "health.d"
            health.mkdir()
            forget = 'rm -f "$0"\n' if self.faults.trial == TRANSIENT_FAULT else ""
            (health / "50-injected").write_text(
                f"#!/bin/sh\n{forget}echo injected fault\nexit 1\n")
            (health / "50-injected").chmod(0o755)
        make_bootloader(self.config)  # a fresh environment: slot a, bootlimit 1
        device_key(self.config.data)

    def public_key(self) -> str:
        return device_key(self.config.data).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def boot(self) -> None:
        """Power on: the boot script (a trial slot that cannot boot panics, the watchdog
        resets, and the boot script falls back), then rcS: resume, then the daemon."""
        self.record.phase = "booting"
        power_on(self.config)
        if self.faults.trial == "boot" and make_bootloader(self.config).trial_pending():
            power_on(self.config)
        standalone = Standalone(self.config, quiet=True, steps=FleetSteps(self))
        standalone.resume()
        self.daemon = FleetDaemon(self)
        self.record.phase = "polling"

    def cycle(self) -> float:
        """One round of the daemon; returns how long to wait. Raises Reboot or PowerCut."""
        return self.daemon.cycle()

    # -- what the fleet asks --------------------------------------------------------------------

    def installed_artifact(self) -> str:
        return FleetSteps(self).provides().get("artifact_name", "")

    def stored_state(self) -> str:
        return StateStore(self.config.data / "state.json").load().state

    def inconsistency(self, artifact_name: str) -> str | None:
        """After an update: what disagrees with the result the server has, if anything.
        Consistent: idle, nothing on trial, running the slot the environment boots, and
        that slot holds the new artifact after a success, the factory one otherwise."""
        stored = self.stored_state()
        env = make_bootloader(self.config).read()
        slot = running_slot(self.config)
        updated = self.record.result == "success"
        expected = (("b", artifact_name) if updated else ("a", FACTORY_ARTIFACT))
        problems = [
            f"state {stored}" if stored != S.IDLE else "",
            "trial pending" if env.get("upgrade_available") != "0" else "",
            f"boots {env.get('mender_boot_part')} but runs slot {slot}"
            if env.get("mender_boot_part") != {"a": "2", "b": "3"}[slot] else "",
            f"runs slot {slot}, expected {expected[0]}" if slot != expected[0] else "",
            f"artifact {self.installed_artifact()}, expected {expected[1]}"
            if self.installed_artifact() != expected[1] else "",
        ]
        return "; ".join(problem for problem in problems if problem) or None


class DiscardedRootfs(RootfsInstaller):
    """rootfs-image on a device that keeps no images (`payload = "discard"`): the payload is
    hashed — iterating a payload file ends only once its sha256 matched the signed
    manifest — and dropped; slot b's file gets what the slot would hold, the release's name."""

    def __init__(self, context: InstallContext, root: Path):
        super().__init__(context)
        self.root = root

    def write_payload(self, update: Update, reader, payload) -> None:
        update.from_slot, update.to_slot = inactive_slot(self.config, self.context.bootloader)
        size = sum(len(chunk) for file in payload.files() for chunk in file)
        self.log(update, f"slot {update.to_slot}: {size} bytes verified and discarded")
        if update.to_slot == "b":
            (self.root / "slot3.img").write_bytes(f"{update.artifact_name}\n".encode())


class CuttingSource:
    """The artifact's source, whose streams call `cut()` at their CUT_AT_READ-th read."""

    def __init__(self, source: ArtifactSource, cut: Callable[[], None]):
        self.source = source
        self.cut = cut

    @contextlib.contextmanager
    def open(self, location: str, **options):
        with self.source.open(location, **options) as stream:
            yield CuttingStream(stream, self.cut)

    def __getattr__(self, name: str):  # verify, connections: what a RangeFetcher asks
        return getattr(self.source, name)


class CuttingStream:
    def __init__(self, stream, cut: Callable[[], None]):
        self.stream = stream
        self.cut = cut
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == CUT_AT_READ:
            self.cut()
        return self.stream.read(size)

    def __getattr__(self, name: str):  # size, etag
        return getattr(self.stream, name)


class SimulatedSteps:
    """What makes the real steps a simulation: reboots end the process, power cuts are
    injected before or after a state, and the payload may be hashed and discarded, but on
    a delta device (the seams `reboot` and `installers` of the steps)."""

    def __init__(self, device: FleetDevice, *args, **seams):
        self.device = device
        installers = INSTALLERS if device.settings.payload == "write" or device.delta else \
            {**INSTALLERS, "rootfs-image": lambda context: DiscardedRootfs(context, device.root)}
        super().__init__(*args, installers=installers, reboot=self.simulated_reboot, **seams)

    def download(self, update: Update) -> Event:
        source = self.source
        self.source = CuttingSource(source, lambda: self._maybe_cut("during", S.DOWNLOAD))
        try:
            return super().download(update)
        finally:
            self.source = source

    def run(self, state: State, update: Update) -> Event:
        record = self.device.record
        record.phase = state.value
        if state is S.SYNC and record.update_started is None:
            record.update_started = time.monotonic()
        self._maybe_cut("before", state)
        event = super().run(state, update)
        self._maybe_cut("after", state)
        return event

    def _maybe_cut(self, when: str, state: State) -> None:
        record = self.device.record
        if self.device.faults.power_cut == (when, state) and not record.power_cuts:
            record.power_cuts += 1
            raise PowerCut(f"{when} {state}")

    def simulated_reboot(self, log: Callable[[str], None]) -> None:
        log("rebooting (simulated)")
        self.device.record.reboots += 1
        raise Reboot()


class FleetSteps(SimulatedSteps, Steps):
    """The steps of `tern-updater resume` at boot."""

    def __init__(self, device: FleetDevice):
        super().__init__(device, device.config, make_bootloader(device.config),
                         ArtifactSource(device.config), True)


class FleetDaemonSteps(SimulatedSteps, DaemonSteps):
    def __init__(self, device: FleetDevice, client: Client):
        super().__init__(device, device.config, make_bootloader(device.config), client, True,
                         source=ArtifactSource(device.config, client.verify,
                                               client.transport))

    def sync(self, update: Update) -> Event:
        event = super().sync(update)
        if event is E.FAILURE:
            self._finished(update, "already-installed")
        return event

    def update_status_report(self, update: Update) -> Event:
        event = super().update_status_report(update)
        if event is E.SUCCESS:
            self._finished(update, update.status)
        return event

    def _finished(self, update: Update, status: str) -> None:
        record = self.device.record
        record.attempts = record.attempts + 1 if record.deployment_id == update.deployment_id \
            else 1
        record.result, record.deployment_id = status, update.deployment_id
        record.update_finished = time.monotonic()


class FleetClient(Client):
    """The device API client on the worker's session; tells the fleet about admission."""

    def __init__(self, device: FleetDevice):
        verify = device.settings.server_certificate or True
        super().__init__(device.settings.server_url, KeySigner(device_key(device.config.data)),
                         device.identity, device.settings.server_certificate,
                         SessionTransport(device.sessions, verify))
        self.record = device.record

    def authenticate(self) -> None:
        try:
            super().authenticate()
        except Unauthorized:
            self.record.admission = "pending"
            raise
        self.record.admission = "accepted"

    def next_deployment(self, provides: dict[str, str]) -> dict | None:
        deployment = super().next_deployment(provides)
        self.record.polls += 1
        return deployment


class FleetDaemon(Daemon):
    """The daemon of one simulated device: its own client and steps, no identity script."""

    def __init__(self, device: FleetDevice):
        client = FleetClient(device)
        super().__init__(device.config, client, FleetDaemonSteps(device, client))


def choose_faults(count: int, fail_rate: float, power_cut_rate: float,
                  rng: random.Random, transient_fail_rate: float = 0.0) -> list[Faults]:
    """Exactly round(count × rate) devices of each kind, picked at random (a device fails
    for good or once, not both)."""
    faults = [Faults() for _ in range(count)]
    failing = rng.sample(range(count), round(count * fail_rate))
    for index in failing:
        faults[index].trial = rng.choice(TRIAL_FAULTS)
    others = sorted(set(range(count)) - set(failing))
    for index in rng.sample(others, min(len(others), round(count * transient_fail_rate))):
        faults[index].trial = TRANSIENT_FAULT
    for index in rng.sample(range(count), round(count * power_cut_rate)):
        faults[index].power_cut = rng.choice(CUT_POINTS)
    return faults
