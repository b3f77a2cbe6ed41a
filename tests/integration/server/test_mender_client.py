"""Debian's mender-client 3.4 as a device on this host, against `tern-server serve` over HTTPS.

The client uses its default data directory (/var/lib/mender -> /data/mender) and the
fixed paths /etc/mender/artifact_info and /usr/share/mender/identity; the fixture
creates them and puts back whatever was there before.
"""
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from testkit import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MENDER = "/usr/bin/mender"
DEVICE_TYPE = "tern-test-device"
DATA_DIR = Path("/data/mender")
ARTIFACT_INFO = Path("/etc/mender/artifact_info")
IDENTITY_SCRIPT = Path("/usr/share/mender/identity/mender-device-identity")


class SystemFiles:
    """Writes files at fixed system paths; `restore()` puts the previous state back."""

    def __init__(self, backup_dir: Path):
        self.backup_dir = backup_dir
        self.saved: list[tuple[Path, Path | None]] = []
        self.created_dirs: list[Path] = []

    def replace(self, path: Path) -> Path:
        backup = None
        if path.exists() or path.is_symlink():
            backup = self.backup_dir / f"{len(self.saved)}-{path.name}"
            shutil.move(path, backup)
        self.saved.append((path, backup))
        self.created_dirs += [p for p in reversed(path.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def restore(self) -> None:
        for path, backup in reversed(self.saved):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            if backup is not None:
                shutil.move(backup, path)
        for directory in reversed(self.created_dirs):
            directory.rmdir()


@pytest.fixture
def mender_device(live_server, tmp_path):
    """A running mender daemon with a fresh identity, polling every second."""
    files = SystemFiles(tmp_path)
    install_dir = tmp_path / "installed"
    mac = "02:00:" + ":".join(uuid.uuid4().hex[i:i + 2] for i in range(0, 8, 2))
    process = None
    try:
        files.replace(DATA_DIR).mkdir(mode=0o700)
        (DATA_DIR / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
        files.replace(ARTIFACT_INFO).write_text("artifact_name=release-0\n")
        files.replace(IDENTITY_SCRIPT).write_text(f"#!/bin/sh\necho mac={mac}\n")
        IDENTITY_SCRIPT.chmod(0o755)
        config = tmp_path / "mender.conf"
        config.write_text(json.dumps({
            "ServerURL": live_server.url,
            "ServerCertificate": str(live_server.live.certificate),
            "UpdatePollIntervalSeconds": 1,
            "InventoryPollIntervalSeconds": 1,
            "RetryPollIntervalSeconds": 1,
            "DeviceTypeFile": str(DATA_DIR / "device_type"),
        }))
        log = tmp_path / "mender.log"
        with log.open("wb") as output:
            process = subprocess.Popen([MENDER, "-c", str(config), "--no-syslog", "-l", "debug",
                                        "daemon"], stdout=output, stderr=subprocess.STDOUT)
        yield {"mac": mac, "install_dir": install_dir, "log": log, "process": process}
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        files.restore()


def single_file_artifact(directory: Path, name: str, device_type: str, install_dir: Path) -> Path:
    """A single-file update module artifact, written by Debian's mender-artifact."""
    work = directory / name
    work.mkdir()
    (work / "dest_dir").write_text(f"{install_dir}\n")
    (work / "filename").write_text("hello.txt\n")
    (work / "permissions").write_text("644\n")
    (work / "hello.txt").write_text(f"installed by {name}\n")
    output = directory / f"{name}.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "single-file", "-n", name,
                    "-t", device_type, "-o", str(output),
                    *[arg for f in ("dest_dir", "filename", "permissions", "hello.txt")
                      for arg in ("-f", str(work / f))]],
                   check=True, capture_output=True)
    return output


def test_real_mender_client_end_to_end(live_server, mender_device, tmp_path):
    operator = live_server
    identity = {"mac": mender_device["mac"]}

    def device(status: str):
        listed = operator.cli("devices", "list", "--status", status)
        return next((d for d in listed if d["identity_data"] == identity), None)

    def deployment_device_status(deployment_id: str):
        shown = operator.cli("deployments", "show", deployment_id)
        status = shown["devices"][0]["status"]
        return status if status in ("success", "failure", "already-installed") else None

    pending = wait_for(lambda: device("pending"), what="the device to show as pending")
    assert [a["status"] for a in pending["auth_sets"]] == ["pending"]
    operator.cli("devices", "accept", pending["id"])

    def inventory():
        accepted = device("accepted")
        attributes = {a["name"]: a["value"] for a in accepted["attributes"]} if accepted else {}
        return attributes if "mender_client_version" in attributes else None

    attributes = wait_for(inventory, what="the device's inventory")
    assert attributes["device_type"] == DEVICE_TYPE
    assert attributes["artifact_name"] == "release-0"

    # A module artifact for this device type installs.
    artifact = single_file_artifact(tmp_path, "app-1.0", DEVICE_TYPE,
                                    mender_device["install_dir"])
    uploaded = operator.cli("artifacts", "upload", str(artifact))
    assert uploaded["name"] == "app-1.0"
    first = operator.cli("deployments", "create", "--name", "first", "--artifact-name",
                         "app-1.0", "--device", pending["id"])
    status = wait_for(lambda: deployment_device_status(first["id"]), what="first deployment")
    assert status == "success", mender_device["log"].read_text()[-4000:]
    assert (mender_device["install_dir"] / "hello.txt").read_text() == "installed by app-1.0\n"
    assert wait_for(lambda: inventory().get("artifact_name") == "app-1.0",
                    what="the new artifact_name in the inventory")

    # The same name again: the client sees it is installed (force: the server hands it over).
    again = operator.cli("deployments", "create", "--name", "again", "--artifact-name",
                         "app-1.0", "--device", pending["id"], "--force")
    assert wait_for(lambda: deployment_device_status(again["id"])) == "already-installed"

    # An artifact for another device type: the client refuses it and uploads its log.
    other = single_file_artifact(tmp_path, "other-1.0", "some-other-device",
                                 mender_device["install_dir"])
    operator.cli("artifacts", "upload", str(other))
    wrong = operator.cli("deployments", "create", "--name", "wrong", "--artifact-name",
                         "other-1.0", "--device", pending["id"], "--force")
    assert wait_for(lambda: deployment_device_status(wrong["id"])) == "failure"
    log_url = f"{operator.url}/api/management/v1/deployments/{wrong['id']}/devices/" \
              f"{pending['id']}/log"

    def log_messages():
        response = requests.get(log_url, headers={"Authorization": f"Bearer {operator.token}"},
                                verify=operator.live.certificate, timeout=10)
        return response.json()["messages"] if response.status_code == 200 else None

    messages = wait_for(log_messages, what="the failure log")
    assert any("not compatible" in m["message"] for m in messages), messages[-5:]
    assert (mender_device["install_dir"] / "hello.txt").read_text() == "installed by app-1.0\n"
