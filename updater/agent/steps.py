"""What each state does to the update in flight (`update.Update`, stored with the state).
Every step is idempotent: after power loss the machine may run the step of the stored
state again (see `machine.RECOVERY`).
"""
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .. import forked
from ..atomic import write_atomically, write_files_durably
from ..bootloader.base import Bootloader
from ..config import Config
from ..install import (
    INSTALLERS,
    CannotResume,
    Fallback,
    InstallContext,
    Installer,
    InstallerFactory,
    NoPayload,
    choose,
    stats_line,
)
from ..install.modules import MODULES_WORK_DIR
from ..install.rootfs import InstallError
from ..source import ArtifactSource, RangeFetcher
from ..update import Progress, Update
from . import device, health
from .logcap import cap_log, cap_text
from .scripts import ScriptError, StateScripts
from .states import Event, State

S, E = State, Event
# Their script failures are logged and ignored: the device is already on its way back.
LENIENT_SCRIPT_STATES = {S.ARTIFACT_ROLLBACK, S.ARTIFACT_ROLLBACK_REBOOT, S.ARTIFACT_FAILURE}
# States with state scripts of the same name.
SCRIPT_STATES = {S.DOWNLOAD, S.ARTIFACT_INSTALL, S.ARTIFACT_REBOOT, S.ARTIFACT_COMMIT,
                 *LENIENT_SCRIPT_STATES}


class StepError(Exception):
    """A step cannot go on; the message is recorded as the update's error."""


Reboot = Callable[[Callable[[str], None]], None]


def command_reboot(command: str) -> Reboot:
    """Reboots with `command`, which ends this process. The SIGTERM of the shutdown that
    the command starts (busybox `reboot` only asks init, which then stops every process)
    ends it with exit 0: the new slot is set and the reboot under way, so
    `tern-updater install --auto-reboot && ...` reads as the success it is."""
    def reboot(log: Callable[[str], None]) -> None:
        log(f"rebooting: {command}")
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, rebooting) if in_main_thread else None
        try:
            subprocess.run(command, shell=True, check=True)
            time.sleep(600)  # the reboot ends this process; if it is still alive, it failed
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
    return reboot


def rebooting(signum: int, frame) -> None:
    print("tern-updater: stopped by the reboot", file=sys.stderr, flush=True)
    raise SystemExit(0)


class Steps:
    """The seams: `source` (where Download reads), `installers` (payload type -> installer)
    and `reboot(log)` (reboots; returns only if the reboot failed). The daemon and the
    fleet simulator pass their own."""

    def __init__(self, config: Config, bootloader: Bootloader, source: ArtifactSource,
                 quiet: bool = False, *, installers: dict[str, InstallerFactory] = INSTALLERS,
                 reboot: Reboot | None = None):
        self.config = config
        self.bootloader = bootloader
        self.source = source
        self.quiet = quiet
        self.installers = installers
        self.reboot = reboot or command_reboot(config.reboot_command)
        self.install_context = InstallContext(config, bootloader, self.log, self.device_type,
                                              lambda update: self.save(update))
        self.save: Callable[[Update], None] = lambda update: None  # the machine's store
        self.artifact_scripts = config.data / "scripts"
        self.scripts = StateScripts(config, self.artifact_scripts)
        self.watchdog = health.Watchdog(config.watchdog_device, self.note)
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
        limit = self.config.deployment_log_limit
        message = cap_text(message, limit // 4)
        update.log = cap_log([*update.log, {"timestamp": timestamp(), "level": level,
                                            "message": message}], limit)
        if not self.quiet:
            print(f"tern-updater: {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """A line on stderr only (the updater's log), outside any update."""
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
        """Stream the artifact: check signature and compatibility, write the payload. After
        power loss, go on from the recorded progress if the installer can."""
        if update.progress is not None and update.kind is not None:
            from ..download import DownloadError  # only here: http.client is not needed before

            try:
                self._download(update, resume=True)
                return E.SUCCESS
            except (CannotResume, DownloadError) as error:
                self.log(update, f"cannot resume the download: {error}; downloading again "
                                 "from the start", "warning")
        update.progress = None
        self._download(update, resume=False)
        return E.SUCCESS

    def _download(self, update: Update, resume: bool) -> None:
        # Only here: the artifact reader pulls in cryptography, which the boot-time
        # resume (and the daemon between deployments) never needs. The signature is
        # checked in a forked child: cryptography's OpenSSL backend never loads here.
        from artifact import ArtifactReader

        verifier = forked.verifier(list(self.config.verify_keys)) \
            if self.config.verify_keys else None
        current = self.provides()
        log = lambda message: self.log(update, message)  # noqa: E731
        check = lambda: self.download_check(update)  # noqa: E731
        probed = 0
        if not resume and self.adaptive():
            signature, probed = self._download_adaptive(update, verifier, current)
            if signature is not None:
                self._downloaded(update, signature)
                return
        progress = update.progress
        # Resuming, only the head is read (version, manifest, signature, header) ...
        opened = self.source.open(update.source, log=log, check=check,
                                  end=progress.head_size if resume else None,
                                  etag=progress.etag if resume else None)
        with opened as stream, ArtifactReader(stream, verifier=verifier) as reader:
            self._accept_head(update, reader, current)
            if resume:
                if (stream.size, stream.etag) != (progress.artifact_size, progress.etag):
                    raise CannotResume("the artifact changed since the download began")
                # ... and the rest from the installer's checkpoint.
                self.installer(update).resume_payload(
                    update, reader, lambda offset: self.source.open(
                        update.source, log=log, check=check, start=offset, etag=progress.etag))
            else:
                for payload in reader.payloads():
                    installer = choose(self.installers, payload.type)(self.install_context)
                    update.kind = installer.kind
                    update.progress = self._progress(stream, payload)
                    installer.write_payload(update, reader, payload)
            size = getattr(stream, "size", None)
        if size is not None and not resume:
            self.log(update, stats_line("full", probed + size, size))
        self._downloaded(update, reader.signature)

    def adaptive(self) -> bool:
        """Does this agent install artifacts with a block index adaptively?"""
        return self.config.delta_max_share > 0 and any(
            hasattr(factory, "write_adaptive") for factory in self.installers.values())

    def _downloaded(self, update: Update, signature: str) -> None:
        update.progress = None
        self.installer(update).download(update)
        self.log(update, f"{update.artifact_name}: downloaded and verified "
                         f"(signature: {signature})")

    def _accept_head(self, update: Update, reader, current: dict[str, str]) -> None:
        """Check the artifact's head (signature, compatibility) and take what it says."""
        from artifact.provides import check_compatible, provides_after_install

        header = reader.header
        if update.deployment_id is not None and update.artifact_name not in (None, header.name):
            # Signed is not enough: an older signed release from a tampered store or an
            # intercepted plain-HTTP link (S3 on a LAN) would downgrade the device.
            raise StepError(f"the deployment's link holds artifact {header.name!r}, not the "
                            f"deployed {update.artifact_name!r}")
        update.artifact_name = header.name
        check_compatible(header, self.device_type(), current)
        if len(header.payloads) != 1:
            raise StepError(f"artifact has {len(header.payloads)} payloads; "
                            "exactly one is supported")
        update.previous_provides = current
        update.provides = provides_after_install(current, header)
        update.payload_type = header.payloads[0].type
        self._store_artifact_scripts(header.scripts)

    def _download_adaptive(self, update: Update, verifier, current) -> tuple[str | None, int]:
        """Install from the artifact's block index, if it has one and the installer of its
        payload can (`write_adaptive`); (the signature's status if done, bytes fetched).
        Anything that stops it but an abort is logged and leaves the full download to the
        caller."""
        from artifact import ArtifactReader
        from artifact.block_index import ANCHOR

        aborted = False

        def check() -> None:
            nonlocal aborted
            try:
                self.download_check(update)
            except BaseException:
                aborted = True
                raise

        fetch = RangeFetcher(self.source, update.source,
                             lambda message: self.log(update, message), check)
        try:
            with fetch.head() as stream, ArtifactReader(stream, verifier=verifier) as reader:
                payload_type = reader.header.payloads[0].type if reader.header.payloads \
                    else None
                installer = choose(self.installers, payload_type)(self.install_context)
                if not hasattr(installer, "write_adaptive"):
                    raise Fallback(f"the {installer.kind} installer takes full payloads only")
                if not any(ANCHOR in (p.meta_data or {}) for p in reader.header.payloads):
                    raise Fallback("the artifact has no block index")
                self._accept_head(update, reader, current)
                update.kind = installer.kind
                update.progress = None  # a cut install resumes from the slots it wrote
                self.save(update)
                installer.write_adaptive(update, reader, fetch)
            return reader.signature, fetch.fetched
        except Exception as error:
            if aborted:
                raise
            reason = str(error) if isinstance(error, Fallback) else \
                f"{type(error).__name__}: {error}"
            self.log(update, f"adaptive install: {reason}; downloading the full artifact")
            return None, fetch.fetched

    def _progress(self, stream, payload) -> Progress | None:
        """Where the installer records checkpoints, if the download can resume at all."""
        size = getattr(stream, "size", None)
        if size is None or payload.restart_point(0) is None:
            return None
        return Progress(size, stream.etag, payload.header_offset, payload.member)

    def download_check(self, update: Update) -> None:
        """Runs all along a download; the daemon raises here when the deployment is aborted."""

    def artifact_install(self, update: Update) -> Event:
        self.installer(update).install(update)
        return E.SUCCESS if update.needs_reboot else E.NO_REBOOT

    def artifact_reboot(self, update: Update) -> Event:
        update.boot_id = self.boot_id()
        if not (update.auto_reboot or self.config.auto_reboot):
            self.log(update, "waiting for a reboot into the new artifact")
            return E.WAIT
        return self._reboot(update)

    def artifact_verify_reboot(self, update: Update) -> Event:
        if self.boot_id() == update.boot_id:
            return E.NOT_REBOOTED
        try:
            rebooted = self.installer(update).verify_reboot(update)
        except InstallError as error:
            if self.watchdog.reset_the_board():
                raise StepError(f"{error}, after the watchdog reset the board (the new "
                                "artifact hung before the updater ran)") from error
            raise
        if not rebooted:
            return E.NOT_REBOOTED
        self._scripts(S.ARTIFACT_VERIFY_REBOOT, "ArtifactReboot", "Leave",
                      lambda message: self.log(update, message))  # the reboot is over
        passed, output = health.run_checks(self.config, self.watchdog)
        update.health = output
        for line in output:
            self.log(update, f"health: {line}")
        if not passed:
            raise StepError("health checks failed: " + "; ".join(output))
        self.watchdog.disarm()
        return E.SUCCESS

    def artifact_commit(self, update: Update) -> Event:
        self.installer(update).commit(update)
        self.write_provides(update.provides)
        update.status = "success"
        self.log(update, f"{update.artifact_name}: committed")
        return E.SUCCESS

    def artifact_rollback(self, update: Update) -> Event:
        update.status = "failure"
        if update.previous_provides and self.provides() != update.previous_provides:
            self.write_provides(update.previous_provides)  # rolled back after a commit
        return E.SUCCESS if self.installer(update).rollback(update) else E.NO_REBOOT

    def artifact_rollback_reboot(self, update: Update) -> Event:
        if self.installer(update).runs_previous(update):
            return E.SUCCESS  # the new artifact never ran, or the bootloader fell back already
        update.boot_id = self.boot_id()
        if not self.config.reboot_command:
            self.log(update, "waiting for a reboot into the previous artifact")
            return E.WAIT
        return self._reboot(update)

    def artifact_verify_rollback_reboot(self, update: Update) -> Event:
        runs_previous = self.installer(update).runs_previous(update)
        if runs_previous is None:  # told by the reboot alone
            runs_previous = self.boot_id() != update.boot_id
        return E.SUCCESS if runs_previous else E.NOT_REBOOTED

    def artifact_failure(self, update: Update) -> Event:
        update.status = "failure"
        self.installer(update).failure(update)
        return E.SUCCESS

    def cleanup(self, update: Update) -> Event:
        self.installer(update).cleanup(update)
        shutil.rmtree(self.config.data / MODULES_WORK_DIR, ignore_errors=True)
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

    def installer(self, update: Update) -> Installer:
        """The installer that took the update's payload (none yet: nothing to undo)."""
        if update.kind is None:
            return NoPayload(self.install_context)
        return choose(self.installers, update.payload_type)(self.install_context)

    def _reboot(self, update: Update) -> Event:
        self.reboot(lambda message: self.log(update, message))
        raise StepError(f"{self.config.reboot_command!r} did not reboot the device")

    def boot_id(self) -> str:
        """Changes with every boot: tells a reboot from a restart of the updater."""
        try:
            return Path(self.config.boot_id_file).read_text().strip()
        except FileNotFoundError:
            return ""

    def _store_artifact_scripts(self, scripts: dict[str, bytes]) -> None:
        """Durably, before the state store moves past Download: after a power cut a script
        must not come back empty (an empty script exits 0: its check would pass unrun)."""
        shutil.rmtree(self.artifact_scripts, ignore_errors=True)
        write_files_durably(self.artifact_scripts, scripts, mode=0o755)

    def device_type(self) -> str:
        return device.device_type(self.config)

    def provides(self) -> dict[str, str]:
        return device.provides(self.config)

    def write_provides(self, provides: dict[str, str]) -> None:
        self.config.data.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config.data / "provides.json",
                         json.dumps(provides, indent=1, sort_keys=True).encode())


def timestamp() -> str:
    """UTC, RFC 3339 with milliseconds: 2026-11-27T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
