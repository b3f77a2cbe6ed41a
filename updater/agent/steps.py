"""What each state does to the update in flight (`update.Update`, stored with the state).
Every step is idempotent: after power loss the machine may run the step of the stored
state again (see `machine.RECOVERY`).
"""
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from artifact import ArtifactReader
from artifact.provides import check_compatible, provides_after_install
from artifact.signing import load_key_file

from ..atomic import write_atomically
from ..bootloader.base import Bootloader
from ..config import Config
from ..install import rootfs
from ..install.modules import UpdateModule, prepare_tree
from ..install.slots import inactive_slot, running_slot, slot_devices
from ..source import ArtifactSource
from ..update import Update
from . import health
from .scripts import ScriptError, StateScripts
from .states import Event, State

S, E = State, Event
ROOTFS_IMAGE = "rootfs-image"
# Their script failures are logged and ignored: the device is already on its way back.
LENIENT_SCRIPT_STATES = {S.ARTIFACT_ROLLBACK, S.ARTIFACT_ROLLBACK_REBOOT, S.ARTIFACT_FAILURE}
# States with state scripts of the same name.
SCRIPT_STATES = {S.DOWNLOAD, S.ARTIFACT_INSTALL, S.ARTIFACT_REBOOT, S.ARTIFACT_COMMIT,
                 *LENIENT_SCRIPT_STATES}


class StepError(Exception):
    """A step cannot go on; the message is recorded as the update's error."""


class Steps:
    def __init__(self, config: Config, bootloader: Bootloader, source: ArtifactSource,
                 quiet: bool = False):
        self.config = config
        self.bootloader = bootloader
        self.source = source  # .open(location) -> a binary stream of the artifact
        self.quiet = quiet
        self.tree = config.data / "modules/v3/payloads/0000/tree"
        self.artifact_scripts = config.data / "scripts"
        self.scripts = StateScripts(config, self.artifact_scripts)
        self.handlers = {
            S.DOWNLOAD: self.download,
            S.ARTIFACT_INSTALL: self.artifact_install,
            S.ARTIFACT_REBOOT: self.artifact_reboot,
            S.ARTIFACT_VERIFY_REBOOT: self.artifact_verify_reboot,
            S.ARTIFACT_COMMIT: self.artifact_commit,
            S.ARTIFACT_ROLLBACK: self.artifact_rollback,
            S.ARTIFACT_ROLLBACK_REBOOT: self.artifact_rollback_reboot,
            S.ARTIFACT_VERIFY_ROLLBACK_REBOOT: self.artifact_verify_rollback_reboot,
            S.ARTIFACT_FAILURE: self.artifact_failure,
            S.CLEANUP: self.cleanup,
            S.UPDATE_STATUS_REPORT: self.update_status_report,
        }

    # -- running a step with its scripts ------------------------------------------------

    def log(self, update: Update, message: str, level: str = "info") -> None:
        """A line of the deployment log, in Mender's format (what the server stores)."""
        update.log.append({"timestamp": timestamp(), "level": level, "message": message})
        if not self.quiet:
            print(f"tern-updater: {message}", file=sys.stderr, flush=True)

    def run(self, state: State, update: Update) -> Event:
        log = lambda message: self.log(update, message)  # noqa: E731
        try:
            if state in SCRIPT_STATES:
                self._scripts(state, state.value, "Enter", log)
            event = self.handlers[state](update)
            if state in SCRIPT_STATES and event not in (E.WAIT, E.FAILURE):
                self._scripts(state, state.value, "Leave", log)
            return event
        except Exception as error:  # any failure of a step fails the update
            message = f"{state}: {error}"
            self.log(update, message, "error")
            if update.error is None:
                update.error = message
            if state in SCRIPT_STATES:
                self._scripts(state, state.value, "Error", log)
            return E.FAILURE

    def _scripts(self, state: State, script_state: str, action: str, log) -> None:
        lenient = state in LENIENT_SCRIPT_STATES or action == "Error"
        try:
            self.scripts.run(script_state, action, log)
        except ScriptError as error:
            if not lenient:
                raise
            log(f"{error} (ignored)")

    # -- the steps ------------------------------------------------------------------------

    def download(self, update: Update) -> Event:
        """Stream the artifact: check signature and compatibility, write the payload."""
        keys = [load_key_file(path) for path in self.config.verify_keys]
        current = self.provides()
        opened = self.source.open(update.source, log=lambda message: self.log(update, message),
                                  check=lambda: self.download_check(update))
        with opened as stream, ArtifactReader(stream, keys) as reader:
            header = reader.header
            update.artifact_name = header.name
            check_compatible(header, self.device_type(), current)
            if len(header.payloads) != 1:
                raise StepError(f"artifact has {len(header.payloads)} payloads; "
                                "exactly one is supported")
            update.previous_provides = current
            update.provides = provides_after_install(current, header)
            update.payload_type = header.payloads[0].type
            self._store_artifact_scripts(header.scripts)
            for payload in reader.payloads():
                if payload.type == ROOTFS_IMAGE:
                    self._download_rootfs(update, reader, payload)
                else:
                    self._download_module(update, header, payload, current)
        if update.kind == "module":
            self.module(update).call("Download")
        self.log(update, f"{header.name}: downloaded and verified "
                         f"(signature: {reader.signature})")
        return E.SUCCESS

    def download_check(self, update: Update) -> None:
        """Runs all along a download; the daemon raises here when the deployment is aborted."""

    def _download_rootfs(self, update: Update, reader, payload) -> None:
        update.kind = "rootfs"
        running, target = inactive_slot(self.config, self.bootloader)
        update.from_slot, update.to_slot = running, target
        device = slot_devices(self.config)[target]
        files = list(payload.header.files)
        if len(files) != 1:
            raise StepError(f"rootfs-image payload has {len(files)} files; expected one")
        self.log(update, f"writing {files[0]} to slot {target} ({device}); running {running}")
        for file in payload.files():
            expected = reader.manifest[f"data/{payload.index:04d}/{file.name}"]
            size = rootfs.write_image(file, device, expected, self.config.verify_readback)
            self.log(update, f"slot {target}: {size} bytes written and verified")

    def _download_module(self, update: Update, header, payload, current: dict) -> None:
        update.kind = "module"
        module = self.module(update)
        if not module.exists():
            raise StepError(f"payload type {payload.type!r}: no update module {module.path}")
        files_dir = prepare_tree(self.tree, header, payload.header, current,
                                 self.device_type())
        for file in payload.files():
            with open(files_dir / file.name, "wb") as out:
                for chunk in file:
                    out.write(chunk)

    def artifact_install(self, update: Update) -> Event:
        if update.kind == "rootfs":
            self.bootloader.set_trial(update.to_slot)
            self.log(update, f"slot {update.to_slot} is the boot candidate (trial boot)")
            update.needs_reboot = True
            return E.SUCCESS
        module = self.module(update)
        update.supports_rollback = module.supports_rollback()
        module.call("ArtifactInstall")
        update.needs_reboot = module.needs_reboot()
        return E.SUCCESS if update.needs_reboot else E.NO_REBOOT

    def artifact_reboot(self, update: Update) -> Event:
        update.boot_id = self.boot_id()
        if not self.config.auto_reboot:
            self.log(update, "waiting for a reboot into the new artifact")
            return E.WAIT
        return self._reboot(update)

    def artifact_verify_reboot(self, update: Update) -> Event:
        if self.boot_id() == update.boot_id:
            return E.NOT_REBOOTED
        if update.kind == "rootfs":
            running = running_slot(self.config)
            if running != update.to_slot:
                if self.bootloader.trial_pending() and \
                        self.bootloader.boot_slot() == update.to_slot:
                    return E.NOT_REBOOTED
                raise StepError(f"the trial boot of slot {update.to_slot} failed: the "
                                f"bootloader fell back to slot {running}")
        self._scripts(S.ARTIFACT_VERIFY_REBOOT, "ArtifactReboot", "Leave",
                      lambda message: self.log(update, message))  # the reboot is over
        watchdog = health.Watchdog(self.config.watchdog_device)
        passed, output = health.run_checks(self.config, watchdog)
        update.health = output
        for line in output:
            self.log(update, f"health: {line}")
        if not passed:
            raise StepError("health checks failed: " + "; ".join(output))
        watchdog.disarm()
        return E.SUCCESS

    def artifact_commit(self, update: Update) -> Event:
        if update.kind == "rootfs":
            running = running_slot(self.config)
            if running != update.to_slot:
                raise StepError(f"not running the new slot {update.to_slot} "
                                f"(running {running}): nothing to commit")
            if self.bootloader.trial_pending():
                self.bootloader.commit()
        else:
            self.module(update).call("ArtifactCommit")
        self.write_provides(update.provides)
        update.status = "success"
        self.log(update, f"{update.artifact_name}: committed")
        return E.SUCCESS

    def artifact_rollback(self, update: Update) -> Event:
        update.status = "failure"
        if update.previous_provides and self.provides() != update.previous_provides:
            self.write_provides(update.previous_provides)  # rolled back after a commit
        if update.kind == "rootfs":
            self.bootloader.rollback(update.from_slot)
            self.log(update, f"boot environment back on slot {update.from_slot}")
            return E.SUCCESS
        if update.kind == "module" and update.supports_rollback:
            module = self.module(update)
            module.call("ArtifactRollback")
            return E.SUCCESS if update.needs_reboot else E.NO_REBOOT
        self.log(update, "nothing to roll back" if update.kind is None
                 else f"update module {update.payload_type} does not support rollback")
        return E.NO_REBOOT

    def artifact_rollback_reboot(self, update: Update) -> Event:
        if update.kind == "rootfs" and running_slot(self.config) == update.from_slot:
            return E.SUCCESS  # the trial slot never ran, or the bootloader fell back already
        update.boot_id = self.boot_id()
        if not self.config.reboot_command:
            self.log(update, "waiting for a reboot into the previous artifact")
            return E.WAIT
        return self._reboot(update)

    def artifact_verify_rollback_reboot(self, update: Update) -> Event:
        if update.kind == "rootfs":
            return E.SUCCESS if running_slot(self.config) == update.from_slot \
                else E.NOT_REBOOTED
        return E.NOT_REBOOTED if self.boot_id() == update.boot_id else E.SUCCESS

    def artifact_failure(self, update: Update) -> Event:
        update.status = "failure"
        if update.kind == "module":
            self.module(update).call("ArtifactFailure")
        return E.SUCCESS

    def cleanup(self, update: Update) -> Event:
        if update.kind == "module":
            self.module(update).call("Cleanup")
        shutil.rmtree(self.tree.parent.parent, ignore_errors=True)
        shutil.rmtree(self.artifact_scripts, ignore_errors=True)
        return E.SUCCESS

    def update_status_report(self, update: Update) -> Event:
        """Record the result; the daemon will also send it to the server from here."""
        if update.status is None:
            update.status = "failure"
            update.error = update.error or "the update ended without a result"
        result = {key: getattr(update, key) for key in ("artifact_name", "source", "status",
                                                        "error", "health", "log", "started")}
        result["finished"] = time.time()
        write_atomically(self.config.data / "last-result.json",
                         json.dumps(result, indent=1).encode())
        return E.SUCCESS

    # -- helpers ----------------------------------------------------------------------------

    def _reboot(self, update: Update) -> Event:
        self.log(update, f"rebooting: {self.config.reboot_command}")
        subprocess.run(self.config.reboot_command, shell=True, check=True)
        time.sleep(600)  # the reboot ends this process; if it is still alive, it failed
        raise StepError(f"{self.config.reboot_command!r} did not reboot the device")

    def boot_id(self) -> str:
        """Changes with every boot: tells a reboot from a restart of the updater."""
        try:
            return Path(self.config.boot_id_file).read_text().strip()
        except FileNotFoundError:
            return ""

    def module(self, update: Update) -> UpdateModule:
        return UpdateModule(self.config.modules_dir, update.payload_type, self.tree,
                            self.config.module_timeout)

    def _store_artifact_scripts(self, scripts: dict[str, bytes]) -> None:
        shutil.rmtree(self.artifact_scripts, ignore_errors=True)
        self.artifact_scripts.mkdir(parents=True)
        for name, content in scripts.items():
            path = self.artifact_scripts / name
            path.write_bytes(content)
            path.chmod(0o755)

    def device_type(self) -> str:
        if self.config.device_type:
            return self.config.device_type
        device_type = read_key_value(self.config.device_type_file).get("device_type")
        if not device_type:
            raise StepError(f"no device type: set device_type, or device_type=NAME in "
                            f"{self.config.device_type_file}")
        return device_type

    def provides(self) -> dict[str, str]:
        try:
            return json.loads((self.config.data / "provides.json").read_text())
        except FileNotFoundError:
            info = read_key_value(self.config.artifact_info)
            return {"artifact_name": info.get("artifact_name", "unknown")}

    def write_provides(self, provides: dict[str, str]) -> None:
        self.config.data.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config.data / "provides.json",
                         json.dumps(provides, indent=1, sort_keys=True).encode())


def timestamp() -> str:
    """UTC, RFC 3339 with milliseconds: 2026-11-27T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_key_value(path: str) -> dict[str, str]:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.strip().split("=", 1) for line in lines if "=" in line)
