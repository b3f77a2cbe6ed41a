"""End-to-end server fixtures: a real `tern-server serve` (gunicorn, HTTPS) on loopback, on
SQLite and on PostgreSQL, and the `tern-server` CLI pointed at it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.admin import ServerAdmin
from testkit.artifacts import build_artifact
from testkit.live_server import LiveServer

ADMIN, PASSWORD = "admin@example.com", "correct horse battery"
NEXT = "/api/devices/v2/deployments/device/deployments/next"
PROVIDES = {"device_provides": {"device_type": "qemux86-64", "artifact_name": "release-0"}}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(request, tmp_path_factory):
    """A live server with a user, on each database: its admin, whose `.cli(...)` runs
    tern-server against the server's URL."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres").create_database(
            f"tern_{request.module.__name__.rsplit('.', 1)[-1]}")
    with LiveServer(tmp_path_factory.mktemp("server") / "data", workers=2,
                    database_url=database_url, names=("ota.test",)) as server:
        yield ServerAdmin(server, ADMIN, PASSWORD, over_https=True)


def tern_artifact(directory: Path, name: str, key: Path | None = None, mib: int = 0) -> Path:
    """A single-file artifact for qemux86-64 made by the `tern-artifact` executable, signed
    with `key` (a private key file) if given; `mib`: a payload of that size, uncompressed."""
    payload = directory / f"{name}.txt"
    payload.write_bytes(bytes(range(256)) * (4096 * mib) if mib else f"{name}\n".encode())
    output = directory / f"{name}.mender"
    subprocess.run([str(Path(sys.executable).with_name("tern-artifact")), "write",
                    "module-image", "-T", "single-file", "-f", str(payload), "-n", name,
                    "-t", "qemux86-64", "-o", str(output), "--no-progress",
                    *(["--compression", "none"] if mib else []),
                    *(["-k", str(key)] if key else [])], check=True, capture_output=True)
    return output


def make_artifact(directory: Path) -> Path:
    """A 1 MiB single-file module artifact, app-1.0 for qemux86-64."""
    path = directory / "app.mender"
    path.write_bytes(build_artifact({"payload.bin": bytes(range(256)) * 4096}, name="app-1.0",
                                    device_types=["qemux86-64"], module_type="single-file"))
    return path


@pytest.fixture
def large_artifact(tmp_path) -> Path:
    """A 4 MiB artifact made by Debian's mender-artifact (random payload: it does not
    compress), large enough that uploads stream past serve's front and nginx's buffers."""
    payload, path = tmp_path / "payload.bin", tmp_path / "big.mender"
    payload.write_bytes(os.urandom(4 << 20))
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "single-file", "-n",
                    "large-1.0", "-t", "qemux86-64", "-f", str(payload), "-o", str(path)],
                   check=True, capture_output=True)
    return path
