"""A live `tern-server serve` (gunicorn over HTTPS) in a subprocess, on loopback."""
import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from testkit import free_port, terminate

DOWNLOADS = "/api/devices/v1/deployments/download/"


class LiveServer:
    """`tern-server serve` over HTTPS on 127.0.0.1, in a subprocess, on a data directory.

    `names`: more names and addresses for the self-signed certificate, e.g. "10.0.2.2", the
    host as QEMU user-mode guests reach it. `port`: a free one by default. As a context
    manager: started, then stopped.
    """

    def __init__(self, data_dir: Path, workers: int = 1, database_url: str | None = None,
                 names: tuple[str, ...] = (), threads: int = 4, request_log: str = "json",
                 settings: dict | None = None, port: int | None = None):
        self.data_dir = data_dir
        self.settings = settings or {}  # added to config.json after init
        self.names = names
        self.port = port or free_port()
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
        if self.settings:
            config = self.data_dir / "config.json"
            config.write_text(json.dumps({**json.loads(config.read_text()), **self.settings}))
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

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def certificate(self) -> Path:
        return self.data_dir / "tls" / "server.crt"

    def sent_bytes(self, path_prefix: str = DOWNLOADS) -> int:
        """The body bytes of the answers to requests under `path_prefix` (default: artifact
        downloads), as the server's own JSON request log counts them."""
        return sum(entry.get("bytes") or 0 for entry in self.logged_requests()
                   if entry.get("path", "").startswith(path_prefix))

    def logged_requests(self) -> list[dict]:
        """The requests the server has answered so far, oldest first, as its JSON request
        log has them: method, path, status, device_id (a device's token)..."""
        return [json.loads(line) for line in self.output.read_text(errors="replace").splitlines()
                if line.startswith("{")]

    def _wait(self, timeout: float) -> None:
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
        terminate(self.process)
