"""Helpers for testing against the server: simulated devices, a throwaway PostgreSQL, a live
HTTPS server. Used by the server's tests and reusable by end-to-end tests.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PG_BIN = Path("/usr/lib/postgresql/15/bin")
AUTH_PATH = "/api/devices/v1/authentication/auth_requests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SimulatedDevice:
    """A device's identity and key, and its signed auth request, as mender-client sends it."""

    def __init__(self, identity: dict, key_kind: str = "rsa"):
        self.identity = identity
        self.key = {"rsa": lambda: rsa.generate_private_key(65537, 2048),
                    "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
                    "ed25519": ed25519.Ed25519PrivateKey.generate}[key_kind]()
        self.pubkey = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.token: str | None = None

    def auth_request(self) -> tuple[bytes, dict[str, str]]:
        """The body and headers of an auth request."""
        body = json.dumps({"id_data": json.dumps(self.identity), "tenant_token": "",
                           "pubkey": self.pubkey}).encode()
        return body, {"Content-Type": "application/json", "X-MEN-Signature": self.sign(body)}

    def sign(self, body: bytes) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(self.key, ec.EllipticCurvePrivateKey):
            signature = self.key.sign(body, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self.key.sign(body)
        return base64.b64encode(signature).decode()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, on a unix socket, owned by the
    `postgres` user when run as root (PostgreSQL refuses to run as root)."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="tern-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-k {self.directory} -p {self.port} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                  "-l", str(self.directory / "log"), "start")
        return self

    def create_database(self, name: str) -> str:
        self._run(str(PG_BIN / "createdb"), "-h", str(self.directory), "-p", str(self.port),
                  "-U", "postgres", name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@/{name}?host={self.directory}&port={self.port}"

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class LiveServer:
    """`tern-server serve` over HTTPS on 127.0.0.1, in a subprocess, on a data directory.

    `names`: more names and addresses for the self-signed certificate, e.g. "10.0.2.2", the
    host as QEMU user-mode guests reach it.
    """

    def __init__(self, data_dir: Path, workers: int = 1, database_url: str | None = None,
                 names: tuple[str, ...] = (), threads: int = 4, request_log: str = "json"):
        self.data_dir = data_dir
        self.names = names
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.workers, self.threads, self.request_log = workers, threads, request_log
        self.database_url = database_url
        self.process: subprocess.Popen | None = None
        self.output = data_dir.parent / f"{data_dir.name}-serve-{self.port}.log"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "server", "--data-dir", str(self.data_dir), *args]

    def start(self, timeout: float = 30) -> "LiveServer":
        init = ["init"] + (["--database-url", self.database_url] if self.database_url else [])
        subprocess.run(self.command(*init), check=True, capture_output=True)
        with self.output.open("wb") as log:
            self.process = subprocess.Popen(
                self.command("serve", "--bind", f"127.0.0.1:{self.port}",
                             "--workers", str(self.workers), "--threads", str(self.threads),
                             "--request-log", self.request_log,
                             *[arg for name in self.names for arg in ("--name", name)]),
                stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait(timeout)
        except BaseException:  # never leave a half-started server behind
            self.stop()
            raise
        return self

    @property
    def certificate(self) -> Path:
        return self.data_dir / "tls" / "server.crt"

    def _wait(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tern-server exited: {self.output.read_text()}")
            if self.certificate.exists():
                try:
                    requests.get(f"{self.url}/api/health", verify=self.certificate, timeout=5)
                    return
                except (requests.ConnectionError, requests.Timeout):  # starting, or busy
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"tern-server did not answer in {timeout}s: {self.output.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for(condition, timeout: float = 90, interval: float = 0.5, what: str = "condition"):
    """Poll `condition` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ServerAdmin:
    """An operator of a LiveServer: a user and its token, `tern-server` on the data directory
    (`cli`), the management API over HTTPS (`get`)."""

    def __init__(self, live: LiveServer, email: str = "admin@example.com",
                 password: str = "tern admin password"):
        self.live = live
        self.environment = {**os.environ, "TERN_PASSWORD": password}
        self.cli("user", "create", email)
        self.token = self.cli("--server", live.url, "--ca-cert", str(live.certificate),
                              "user", "login", email, json_output=False).strip()

    def cli(self, *args: str, json_output: bool = True):
        """tern-server, in-process on the data directory unless --server is given."""
        base = [] if "--server" in args else ["--data-dir", str(self.live.data_dir)]
        result = subprocess.run([sys.executable, "-m", "server", *base, *args,
                                 *(["--json"] if json_output else [])],
                                capture_output=True, text=True, timeout=300,
                                env=self.environment)
        if result.returncode != 0:
            raise RuntimeError(f"tern-server {' '.join(args)}: {result.stderr}")
        return json.loads(result.stdout) if json_output else result.stdout

    def get(self, path: str):
        """GET /api/management/v1<path>."""
        import requests

        response = requests.get(f"{self.live.url}/api/management/v1{path}",
                                headers={"Authorization": f"Bearer {self.token}"},
                                verify=self.live.certificate, timeout=30)
        response.raise_for_status()
        return response.json()

    def device(self, identity: dict) -> dict | None:
        found = [d for d in self.cli("devices", "list") if d["identity_data"] == identity]
        return found[0] if found else None

    def accept(self, identity: dict, timeout: float = 300) -> str:
        """Wait for the auth request of the device with `identity` and accept it; returns
        the device's id."""
        pending = wait_for(lambda: self.device(identity), timeout=timeout,
                           what=f"the auth request of {identity}")
        self.cli("devices", "accept", pending["id"])
        return pending["id"]

    def attributes(self, device_id: str) -> dict:
        return {a["name"]: a["value"] for a in self.get(f"/devices/{device_id}")["attributes"]}

    def device_status(self, deployment_id: str, device_id: str) -> str:
        devices = self.get(f"/deployments/{deployment_id}/devices")
        return next(d["status"] for d in devices if d["device_id"] == device_id)

    def device_log(self, deployment_id: str, device_id: str) -> list[str]:
        log = self.get(f"/deployments/{deployment_id}/devices/{device_id}/log")
        return [message["message"] for message in log["messages"]]

