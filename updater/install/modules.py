"""Mender-compatible update modules (protocol v3), so Debian's modules work unchanged: the
installer of every payload type but rootfs-image calls the module of the type's name.

A module is called as `<module> <State> <tree>`; the tree holds the artifact's header
and the payload's files as Mender lays them out:

    tree/version                      3
    tree/current_artifact_name|group, current_device_type
    tree/header/artifact_name|group, payload_type, header-info, type-info, meta-data
    tree/files/<payload files>        stored before `Download` is called
    tree/tmp/                         the module's scratch space

Streaming modules (`stream-next`) are not supported: the files are always stored.
"""
import json
import shutil
import subprocess
from pathlib import Path

from ..update import Update
from .installer import Installer

MODULES_WORK_DIR = "modules/v3/payloads"  # under data_dir, removed at Cleanup


class ModuleError(Exception):
    """The module is missing, failed, or timed out."""


class UpdateModule:
    def __init__(self, modules_dir: str, payload_type: str, tree: Path, timeout: float):
        self.path = Path(modules_dir) / payload_type
        self.tree = tree
        self.timeout = timeout

    def exists(self) -> bool:
        return self.path.is_file()

    def call(self, state: str) -> str:
        try:
            result = subprocess.run([str(self.path), state, str(self.tree)], cwd=self.tree,
                                    capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ModuleError(f"{self.path.name} {state}: timed out after {self.timeout:g} s"
                              ) from None
        except OSError as error:
            raise ModuleError(f"{self.path.name} {state}: {error}") from None
        if result.returncode != 0:
            raise ModuleError(f"{self.path.name} {state}: exit {result.returncode}: "
                              f"{result.stderr.strip() or result.stdout.strip()}")
        return result.stdout.strip()

    def needs_reboot(self) -> bool:
        answer = self.call("NeedsArtifactReboot")
        if answer not in ("", "No", "Yes", "Automatic"):
            raise ModuleError(f"{self.path.name} NeedsArtifactReboot: unexpected {answer!r}")
        return answer in ("Yes", "Automatic")

    def supports_rollback(self) -> bool:
        answer = self.call("SupportsRollback")
        if answer not in ("", "No", "Yes"):
            raise ModuleError(f"{self.path.name} SupportsRollback: unexpected {answer!r}")
        return answer == "Yes"


def prepare_tree(tree: Path, header, payload, current: dict[str, str], device_type: str) -> Path:
    """Lay out a fresh module tree; returns the directory for the payload's files."""
    shutil.rmtree(tree, ignore_errors=True)
    for directory in ("header", "files", "tmp"):
        (tree / directory).mkdir(parents=True)
    (tree / "version").write_text("3\n")
    (tree / "current_artifact_name").write_text(current.get("artifact_name", "") + "\n")
    (tree / "current_artifact_group").write_text(current.get("artifact_group", "") + "\n")
    (tree / "current_device_type").write_text(device_type + "\n")
    (tree / "header/artifact_name").write_text(header.name + "\n")
    (tree / "header/artifact_group").write_text((header.group or "") + "\n")
    (tree / "header/payload_type").write_text(payload.type + "\n")
    (tree / "header/header-info").write_text(json.dumps(header.header_info()))
    (tree / "header/type-info").write_text(json.dumps(payload.type_info()))
    (tree / "header/meta-data").write_text(json.dumps(payload.meta_data or {}))
    return tree / "files"


class ModuleInstaller(Installer):
    """Each state is the module's: `<modules_dir>/<payload type> <State> <tree>`."""

    kind = "module"

    def module(self, update: Update) -> UpdateModule:
        return UpdateModule(self.config.modules_dir, update.payload_type, self.tree,
                            self.config.module_timeout)

    @property
    def tree(self) -> Path:
        return self.config.data / MODULES_WORK_DIR / "0000/tree"

    def write_payload(self, update: Update, reader, payload) -> None:
        module = self.module(update)
        if not module.exists():
            raise ModuleError(f"payload type {payload.type!r}: no update module {module.path}")
        files_dir = prepare_tree(self.tree, reader.header, payload.header,
                                 update.previous_provides, self.context.device_type())
        for file in payload.files():
            with open(files_dir / file.name, "wb") as out:
                for chunk in file:
                    out.write(chunk)

    def download(self, update: Update) -> None:
        self.module(update).call("Download")

    def install(self, update: Update) -> None:
        module = self.module(update)
        update.supports_rollback = module.supports_rollback()
        module.call("ArtifactInstall")
        update.needs_reboot = module.needs_reboot()

    def commit(self, update: Update) -> None:
        self.module(update).call("ArtifactCommit")

    def rollback(self, update: Update) -> bool:
        if not update.supports_rollback:
            self.log(update, f"update module {update.payload_type} does not support rollback")
            return False
        self.module(update).call("ArtifactRollback")
        return bool(update.needs_reboot)

    def failure(self, update: Update) -> None:
        self.module(update).call("ArtifactFailure")

    def cleanup(self, update: Update) -> None:
        self.module(update).call("Cleanup")
