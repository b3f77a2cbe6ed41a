"""Tern scaled out as in production, on one machine: `tern-server serve` instances sharing one
database (and their secret, certificate and artifact storage), optionally on one PostgreSQL
and one S3 bucket (moto's server) behind nginx with the README's block (`ScaleOut`)."""
import contextlib
import json
import os
import shutil
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from server.config import new_secret
from server.tls import ensure_self_signed
from testkit.live_server import LiveServer
from testkit.nginx import Nginx
from testkit.postgres import PostgresServer
from testkit.s3 import CREDENTIALS, S3Server

NAME = "ota.example.com"  # the README's, which nginx checks the instances' certificate for
BUCKET = "tern-artifacts"


def shared_instances(directory: Path, settings: dict, count: int = 2,
                     workers: int = 2) -> list[LiveServer]:
    """`count` data directories as on `count` hosts (not started): the same config.json
    (`settings`), secret.key and certificate (for NAME and 127.0.0.1)."""
    secret = new_secret()
    ensure_self_signed(directory / "tls", [NAME, "localhost", "127.0.0.1"])
    servers = []
    for number in range(1, count + 1):
        data_dir = directory / f"host{number}"
        data_dir.mkdir()
        (data_dir / "config.json").write_text(json.dumps(settings))
        (data_dir / "secret.key").write_text(secret)
        shutil.copytree(directory / "tls", data_dir / "tls")
        servers.append(LiveServer(data_dir, workers=workers, names=(NAME,)))
    return servers


def start_together(servers: list[LiveServer], timeout: float = 30) -> None:
    """Started at once (each migrates the empty database: only one may do it)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda server: server.start(timeout), servers))


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


@dataclass
class Front:
    """What `ServerAdmin` needs of a server: nginx's URL, the certificate it presents, and
    a data directory of the instances for the in-process CLI."""

    url: str
    certificate: Path
    data_dir: Path


class ScaleOut:
    """PostgreSQL, moto's S3 server with a bucket, `count` instances on both, and nginx in
    front of them. The environment gets the S3 credentials (the instances inherit them).
    `kill(i)` SIGKILLs instance i's gunicorn master and workers at once (a host lost);
    `restart(i)` starts it again on its port."""

    def __init__(self, count: int = 2, workers: int = 2):
        self.directory = Path(tempfile.mkdtemp(prefix="tern-scale-out-"))
        self.count, self.workers = count, workers
        self.postgres: PostgresServer | None = None
        self.s3: S3Server | None = None
        self.instances: list[LiveServer] = []
        self.nginx: Nginx | None = None

    def start(self) -> "ScaleOut":
        try:
            os.environ.update(CREDENTIALS)
            self.postgres = PostgresServer().start()
            self.s3 = S3Server().start()
            self.s3.create_bucket(BUCKET)
            settings = {"database_url": self.postgres.create_database("tern"),
                        "artifact_storage": {"backend": "s3", "bucket": BUCKET,
                                             "prefix": "artifacts/",
                                             "endpoint_url": self.s3.url}}
            self.instances = shared_instances(self.directory, settings, self.count,
                                              self.workers)
            start_together(self.instances, timeout=300)  # a loaded machine's start-up
            self.nginx = Nginx([i.port for i in self.instances], self.certificate).start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def certificate(self) -> Path:
        return self.directory / "tls" / "server.crt"

    @property
    def front(self) -> Front:
        return Front(self.nginx.url, self.certificate, self.instances[-1].data_dir)

    def kill(self, index: int) -> None:
        for pid in process_tree(self.instances[index].process.pid):
            with contextlib.suppress(ProcessLookupError):  # a worker exiting on its own
                os.kill(pid, signal.SIGKILL)
        self.instances[index].process.wait()

    def restart(self, index: int) -> None:
        self.instances[index].start(timeout=300)

    def stop(self) -> None:
        for part in [self.nginx, *self.instances, self.s3]:
            if part is not None:
                part.stop()
        if self.postgres is not None:
            self.postgres.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "ScaleOut":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
