"""End-to-end server fixtures: a real `tern-server serve` (gunicorn, HTTPS) on loopback, on
SQLite and on PostgreSQL, and the `tern-server` CLI pointed at it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.testing import LiveServer, PostgresServer

ADMIN, PASSWORD = "admin@example.com", "correct horse battery"


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(request, tmp_path_factory):
    """A live server with a user, on each database; `.cli(...)` runs tern-server against it."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres").create_database(
            f"tern_{request.module.__name__.rsplit('.', 1)[-1]}")
    server = LiveServer(tmp_path_factory.mktemp("server") / "data", workers=2,
                        database_url=database_url, names=("ota.test",)).start()
    try:
        yield Operator(server)
    finally:
        server.stop()


class Operator:
    """Runs the `tern-server` CLI against a live server, as an operator would."""

    def __init__(self, server: LiveServer):
        self.server = server
        self.url = server.url
        self.local(["user", "create", ADMIN])
        self.token = self.run(["--server", server.url, "--ca-cert", str(server.certificate),
                               "user", "login", ADMIN]).strip()

    def run(self, args: list[str]) -> str:
        environment = {**os.environ, "TERN_PASSWORD": PASSWORD}
        result = subprocess.run([sys.executable, "-m", "server", *args], capture_output=True,
                                text=True, env=environment, timeout=120)
        assert result.returncode == 0, f"tern-server {' '.join(args)}: {result.stderr}"
        return result.stdout

    def local(self, args: list[str]) -> str:
        """Against the data directory, in-process."""
        return self.run(["--data-dir", str(self.server.data_dir), *args])

    def cli(self, *args: str):
        """Against the server's URL over HTTPS; the parsed --json output."""
        output = self.run(["--server", self.url, "--token", self.token, "--ca-cert",
                           str(self.server.certificate), *args, "--json"])
        return json.loads(output)


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
