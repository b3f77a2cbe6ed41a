"""End-to-end server fixtures: a real `tern-server serve` (gunicorn, HTTPS) on loopback, and
the `tern-server` CLI pointed at it."""
import json
import os
import subprocess
import sys

import pytest

from server.testing import LiveServer, PostgresServer

ADMIN, PASSWORD = "admin@example.com", "correct horse battery"


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """A live server on SQLite with a user; `.cli(...)` runs tern-server against its URL."""
    server = LiveServer(tmp_path_factory.mktemp("server") / "data").start()
    try:
        yield Operator(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def live_server_postgresql(tmp_path_factory, postgres):
    """The same, on PostgreSQL, with two gunicorn workers."""
    server = LiveServer(tmp_path_factory.mktemp("server") / "data", workers=2,
                        database_url=postgres.create_database("tern_live")).start()
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
