#!/usr/bin/env python3
"""Benchmark the server's device polling: deployments `next` with authenticated devices,
beside a hello-world endpoint (`/api/health`) of the same server and nginx answering 204,
all over HTTPS on loopback, in one run, with wrk as the load generator.

    python -m bench.server [--devices 100] [--duration 10] [--connections 16]
                           [--workers 2] [--database sqlite|postgresql]

Rows: nginx 204 (the ceiling of this machine and TLS setup); /api/health (Flask +
gunicorn, no database); `next` with nothing to deploy (204: token check + one query);
`next` with a deployment pending (200: the artifact chosen, a signed URL made).
Every device has its own token; wrk rotates through them.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.wrk import run_as_devices, start_nginx_204, stop_nginx
from server import create_app
from server.config import data_dir_config
from server.devices import service as devices
from testkit.devices import SimulatedDevice
from testkit.live_server import LiveServer
from testkit.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

NEXT = "/api/devices/v2/deployments/device/deployments/next"
PROVIDES = {"device_provides": {"device_type": "qemux86-64", "artifact_name": "release-0"},
            "update_control_map": False}

def enrol(server: LiveServer, count: int, with_deployment: bool) -> list[str]:
    """`count` accepted devices with inventory; returns their tokens."""
    import requests

    fleet = [SimulatedDevice({"mac": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"}, "ed25519")
             for i in range(count)]
    auth = f"{server.url}/api/devices/v1/authentication/auth_requests"
    app = create_app(data_dir_config(server.data_dir))
    with app.app_context():  # preauthorized: new keys from one address are rate-limited
        for device in fleet:
            devices.preauthorize(device.identity, device.pubkey)
    for device in fleet:
        body, headers = device.auth_request()
        device.token = requests.post(auth, data=body, headers=headers,
                                     verify=server.certificate).text
    if with_deployment:
        deploy_to_all(server, app)
    return [device.token for device in fleet]


def deploy_to_all(server: LiveServer, app) -> None:
    from server.artifacts import service as artifacts
    from server.deployments import service as deployments
    from testkit.artifacts import single_file_artifact

    path = single_file_artifact(server.data_dir.parent, "app-1.0")
    with app.app_context(), path.open("rb") as source:
        artifacts.upload(source)
        deployments.create("benchmark", "app-1.0", all_devices=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--duration", type=int, default=10, help="seconds per row")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn and nginx workers")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install {tool}")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="tern-bench-") as work:
        args.work = work
        postgres = PostgresServer().start() if args.database == "postgresql" else None
        url = postgres.create_database("bench") if postgres else None
        server = LiveServer(Path(work) / "data", workers=args.workers, database_url=url)
        nginx = None
        try:
            server.start()
            nginx, nginx_url = start_nginx_204(work, server.certificate, args.workers)
            tokens = Path(work) / "tokens.txt"
            tokens.write_text("\n".join(enrol(server, args.devices, with_deployment=False)))
            body = json.dumps(PROVIDES)
            rows["nginx: return 204"] = run_as_devices(nginx_url, "/", None, args)
            rows["tern: GET /api/health (hello world, 204)"] = run_as_devices(
                server.url, "/api/health", None, args)
            rows["tern: POST v2 next, nothing to deploy (204)"] = run_as_devices(
                server.url, NEXT, tokens, args, "POST", body)
            deploy_to_all(server, create_app(data_dir_config(server.data_dir)))
            rows["tern: POST v2 next, deployment pending (200)"] = run_as_devices(
                server.url, NEXT, tokens, args, "POST", body)
        finally:
            stop_nginx(nginx)
            server.stop()
            if postgres is not None:
                postgres.stop()

    print(f"\n{args.devices} devices, {args.connections} connections, {args.duration} s per "
          f"row, {args.workers} gunicorn workers x 4 threads, {args.database}, "
          f"{os.cpu_count()} CPUs shared with wrk\n")
    print("| endpoint | requests/s | p50 ms | p99 ms | non-2xx | socket errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['per_second']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
              f"| {row['non_2xx']} | {row['socket_errors']} |")


if __name__ == "__main__":
    main()
