"""Mender-compatible state scripts.

`<State>_<Enter|Leave|Error>_<NN>[_<description>]`, run in name order. Idle, Sync and
Download scripts come from the root file system (`scripts_dir`); the Artifact* ones
from the artifact being installed. Exit 0 is success, 21 means "retry later" (again
every `state_script_retry_interval` s, for up to `state_script_retry_timeout` s), anything
else — or running past `state_script_timeout` — is a failure.
"""
import re
import subprocess
import time
from pathlib import Path

from ..config import Config
from .logcap import cap_text

RETRY_LATER = 21
ROOTFS_STATES = ("Idle", "Sync", "Download")
SCRIPT_NAME = re.compile(r"(?P<state>[A-Za-z]+)_(?P<action>Enter|Leave|Error)_\d\d(_.*)?")


class ScriptError(Exception):
    """A state script failed or timed out."""


class StateScripts:
    def __init__(self, config: Config, artifact_dir: Path):
        self.config = config
        self.rootfs_dir = Path(config.scripts_dir)
        self.artifact_dir = artifact_dir

    def scripts(self, state: str, action: str) -> list[Path]:
        directory = self.rootfs_dir if state in ROOTFS_STATES else self.artifact_dir
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.iterdir()):
            match = SCRIPT_NAME.fullmatch(path.name)
            if match and match["state"] == state and match["action"] == action:
                found.append(path)
        return found

    def run(self, state: str, action: str, log) -> None:
        for script in self.scripts(state, action):
            self._run_one(script, log)

    def _run_one(self, script: Path, log) -> None:
        give_up = time.monotonic() + self.config.state_script_retry_timeout
        while True:
            try:
                result = subprocess.run([str(script)], capture_output=True, text=True,
                                        timeout=self.config.state_script_timeout)
            except subprocess.TimeoutExpired:
                raise ScriptError(f"state script {script.name}: timed out after "
                                  f"{self.config.state_script_timeout:g} s") from None
            except OSError as error:
                raise ScriptError(f"state script {script.name}: {error}") from None
            output = cap_text((result.stdout + result.stderr).strip(),
                              self.config.deployment_log_limit // 4)
            if output:
                log(f"{script.name}: {output}")
            if result.returncode == 0:
                return
            if result.returncode == RETRY_LATER and time.monotonic() < give_up:
                log(f"{script.name}: retry later (exit 21)")
                time.sleep(self.config.state_script_retry_interval)
                continue
            raise ScriptError(f"state script {script.name}: exit {result.returncode}")
