#!/usr/bin/env python3
"""Artifact download throughput: 1 and 100 concurrent clients fetching the same artifact over
HTTPS, from Tern as deployed and from nginx serving the same file, in one run.

    python -m bench.download [--size-mib 16] [--duration 10] [--rounds 3] [--workers 2]

Rows, each with the device's signed download link and the same certificate:
- nginx: the artifact file as a static file (the ceiling);
- tern: `tern-server serve` (gunicorn gthread, TLS in Python) sending the file itself;
- nginx -> tern: nginx ends TLS and proxies to tern, which checks the link and answers
  `X-Accel-Redirect` (`accel_redirect_prefix`), so nginx sends the file.
wrk is the client (it reads every body to the end and throws it away); MB/s is body bytes
per second (1 MB = 10^6 bytes). Goal (issue 7): >= 0.9x nginx.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

from bench import wrk
from bench.wrk import NGINX_HEAD, TEMP_PATHS
from server import create_app
from server.config import data_dir_config
from testkit import free_port
from testkit.live_server import LiveServer

ROOT = Path(__file__).resolve().parent.parent

ACCEL_PREFIX = "/_artifacts/"

# Fetch one path, again and again.
FETCH = "wrk.path = %(path)s\n"

NGINX_CONF = NGINX_HEAD + """
http {
  access_log off;
  sendfile on;""" + TEMP_PATHS + """
  upstream tern { server 127.0.0.1:%(tern_port)d; keepalive 16; }
  server {
    listen 127.0.0.1:%(static_port)d ssl;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    location / { root %(static_root)s; }
  }
  server {
    listen 127.0.0.1:%(proxy_port)d ssl;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    location %(accel)s { internal; alias %(artifacts)s/; }
    location / {
      proxy_pass https://tern;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }
  }
}
"""


def fetch(url: str, path: str, connections: int, args) -> dict:
    return wrk.run(url, FETCH % {"path": wrk.lua_string(path)}, args.work,
                   connections=connections, duration=args.duration,
                   threads=min(connections, 2), timeout=120)


def make_artifact(work: Path, size_mib: int) -> Path:
    """A module-image artifact around `size_mib` MiB of random (incompressible) bytes."""
    from artifact import ArtifactHeader, write_artifact
    from artifact.payloads import PayloadOptions, Software, module_image

    payload = work / "payload.bin"
    with payload.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(1 << 20))
    path = work / "big.mender"
    with path.open("wb") as out:
        write_artifact(out, ArtifactHeader("big-1.0", ["qemux86-64"], []), [module_image(
            "single-file", [payload], Software(name="single-file"), PayloadOptions())],
            compression="none")
    payload.unlink()
    return path


def upload_and_sign(data_dir: Path, artifact: Path) -> tuple[str, Path]:
    """Upload in-process; return the device's signed link (path and query) and the file."""
    from server.artifacts import service as artifacts
    from server.storage import storage

    app = create_app(data_dir_config(data_dir))
    with app.test_request_context(), artifact.open("rb") as source:
        uploaded = artifacts.upload(source)
        uri, _ = artifacts.device_download_url(uploaded)
        stored = storage().path(uploaded.id)
    return uri.split("://", 1)[1].split("/", 1)[1], stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10, help="seconds per row")
    parser.add_argument("--rounds", type=int, default=3,
                        help="every row this many times, interleaved (the machine drifts)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn and nginx workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install {tool}")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="tern-download-") as work:
        args.work = work
        Path(work).chmod(0o755)  # nginx's workers run as nobody
        data_dir = Path(work) / "data"
        data_dir.mkdir()
        (data_dir / "config.json").write_text(json.dumps({"accel_redirect_prefix": ""}))
        artifact = make_artifact(Path(work), args.size_mib)
        direct = LiveServer(data_dir, workers=args.workers, threads=args.threads,
                            request_log="off")
        behind = nginx = None
        try:
            direct.start()
            link, stored = upload_and_sign(data_dir, artifact)
            # A second instance on the same data directory, configured for nginx in front.
            accel_dir = Path(work) / "accel"
            shutil.copytree(data_dir, accel_dir, symlinks=True,
                            ignore=shutil.ignore_patterns("*.log"))
            (accel_dir / "config.json").write_text(json.dumps({
                "database_url": f"sqlite:///{data_dir / 'tern.db'}",
                "artifacts_dir": str(stored.parent), "accel_redirect_prefix": ACCEL_PREFIX}))
            behind = LiveServer(accel_dir, workers=args.workers, threads=args.threads,
                                request_log="off").start()
            static_root = Path(work) / "static"
            static_root.mkdir()
            os.link(stored, static_root / "artifact.mender")
            static_port, proxy_port = free_port(), free_port()
            nginx = wrk.start_nginx(
                work, NGINX_CONF, workers=args.workers, tern_port=behind.port,
                static_port=static_port, proxy_port=proxy_port, cert=direct.certificate,
                key=direct.certificate.with_name("server.key"), static_root=static_root,
                accel=ACCEL_PREFIX, artifacts=stored.parent)
            targets = {"nginx (static file)": (f"https://127.0.0.1:{static_port}",
                                               "/artifact.mender"),
                       "tern (gunicorn, TLS)": (direct.url, "/" + link),
                       "nginx -> tern (X-Accel-Redirect)": (f"https://127.0.0.1:{proxy_port}",
                                                            "/" + link)}
            for _ in range(args.rounds):
                for clients in args.clients:
                    for name, (url, path) in targets.items():
                        rows.setdefault(f"{name}, {clients} client{'s' if clients > 1 else ''}",
                                        []).append(fetch(url, path, clients, args))
        finally:
            wrk.stop_nginx(nginx)
            for server in (direct, behind):
                if server is not None:
                    server.stop()

    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"rows": rows, "load_average_1m": load}, indent=2))
        return
    print(f"\n{args.size_mib} MiB artifact, {args.rounds} rounds of {args.duration} s per row, "
          f"{args.workers} workers (gunicorn x {args.threads} threads; nginx), {os.cpu_count()} "
          f"CPUs shared with wrk; load average (1 min) after the run {load:.1f}\n")
    print("Medians over the rounds; x nginx is the median of each round's ratio to the nginx row "
          "run just before it (range in brackets).\n")
    print("| server, clients | MB/s | x nginx | downloads | p50 ms | p99 ms | non-2xx | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in rows.items():
        clients = name.rsplit(", ", 1)[1]
        baselines = rows[f"nginx (static file), {clients}"]
        ratios = sorted(run["mb_per_second"] / base["mb_per_second"]
                        for run, base in zip(runs, baselines, strict=True))
        print(f"| {name} | {median(r['mb_per_second'] for r in runs):.0f} "
              f"| {median(ratios):.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}] "
              f"| {sum(r['requests'] for r in runs)} | {median(r['p50_ms'] for r in runs):.0f} "
              f"| {median(r['p99_ms'] for r in runs):.0f} | {sum(r['non_2xx'] for r in runs)} "
              f"| {sum(r['socket_errors'] for r in runs)} |")


if __name__ == "__main__":
    main()
