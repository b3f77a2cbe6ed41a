#!/usr/bin/env python3
"""Sustained device polls against a fleet of 1,000,000 devices, over HTTPS as deployed.

    python -m bench.polls [--devices 1000000] [--sample 10000] [--duration 20]
                          [--rounds 3] [--connections 32] [--workers 2] [--threads 4]

PostgreSQL (a throwaway cluster) is seeded in bulk with COPY: N accepted devices, each with
an auth set, two inventory attributes, a token, and a finished deployment (one rollout to
the whole fleet already done), then ANALYZEd. `tern-server serve` (gunicorn gthread, TLS)
answers wrk, which rotates through the tokens of `--sample` devices picked at random from
the fleet (a Lua table of a million JWTs would measure wrk, not the server). Rows, in one
run, same certificate, same worker count: nginx answering 204; the same stack's
hello-world (`GET /api/health`, no database); Mender's `GET .../deployments/next` (v1,
what mender-client polls with, nothing to deploy: 204) and the v2 POST. Then (issue 18 §6)
a phased deployment to a dynamic group of `--phased` of the devices (a region in their
inventory) is added, open to joiners and paused by its canary's failure threshold, and the
v1 poll is measured again: as the same sample (some of them in the deployment), and as
devices of the deployment only (each poll finds it open, and paused: 204). Goals (issue 7,
18): >= 1,000 polls/s, p99 < 100 ms.
"""
import argparse
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import jwt
import psycopg

from bench.wrk import run_as_devices, start_nginx_204, stop_nginx
from server.config import new_secret
from server.devices.service import identity_hash
from testkit.live_server import LiveServer
from testkit.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

DEVICE_TYPE = "qemux86-64"
NEXT_V1 = f"/api/devices/v1/deployments/device/deployments/next?artifact_name=release-1" \
          f"&device_type={DEVICE_TYPE}"
NEXT_V2 = "/api/devices/v2/deployments/device/deployments/next"
PROVIDES = json.dumps({"device_provides": {"device_type": DEVICE_TYPE,
                                           "artifact_name": "release-1"}})
COPY_BATCH = 100_000

HELLO = "tern: GET /api/health (hello world, 204)"
POLL = "tern: GET v1 next, nothing to deploy (204)"
TERN_ROWS = {HELLO: ("/api/health", False, "GET", None),
             POLL: (NEXT_V1, True, "GET", None),
             "tern: POST v2 next, nothing to deploy (204)": (NEXT_V2, True, "POST", PROVIDES)}


def _copy(cursor, table: str, columns: str, rows) -> None:
    """COPY rows (tuples of str) in text format."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join("\\N" if v is None else v for v in row))
        buffer.write("\n")
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


def seed(postgres: PostgresServer, database: str, count: int, secret: str, sample: int,
         tokens_file: Path, phased: int = 0) -> tuple[float, list[str], Path]:
    """`count` accepted devices with inventory, tokens and a finished deployment; JWTs of
    `sample` of them into `tokens_file`, and of those among the first `phased` devices into
    a file beside. Returns the seconds it took, the first `phased` devices' ids and that
    file."""
    started = time.monotonic()
    now = datetime.now(UTC)
    expires = now + timedelta(days=7)
    stamp, expiry = now.isoformat(), expires.isoformat()
    deployment_id = str(uuid.uuid4())
    picked = set(random.sample(range(count), min(sample, count)))
    tokens, phased_tokens, phased_ids = [], [], []
    with psycopg.connect(host=str(postgres.directory), port=postgres.port, user="postgres",
                         dbname=database, autocommit=True) as connection:
        cursor = connection.cursor()
        # No foreign-key triggers while loading: the rows are consistent by construction.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("INSERT INTO deployments (id, name, artifact_name, force, created_at) "
                       "VALUES (%s, 'rollout-1', 'release-1', false, %s)",
                       (deployment_id, stamp))
        for start in range(0, count, COPY_BATCH):
            batch = range(start, min(start + COPY_BATCH, count))
            ids = [str(uuid.uuid4()) for _ in batch]
            token_ids = [str(uuid.uuid4()) for _ in batch]
            key_ids = [str(uuid.uuid4()) for _ in batch]
            identities = [f'{{"mac":"02:{i:010x}"}}' for i in batch]
            _copy(cursor, "devices", "id, identity, identity_hash, status, created_at, updated_at",
                  ((d, identity, identity_hash(identity), "accepted", stamp, stamp)
                   for identity, d in zip(identities, ids, strict=True)))
            _copy(cursor, "auth_sets", "id, device_id, pubkey, status, created_at",
                  ((k, d, f"benchmark key {d}", "accepted", stamp)
                   for d, k in zip(ids, key_ids, strict=True)))
            _copy(cursor, "inventory", "device_id, name, value, updated_at",
                  (row for d in ids for row in ((d, "device_type", f'"{DEVICE_TYPE}"', stamp),
                                                (d, "artifact_name", '"release-1"', stamp))))
            _copy(cursor, "tokens", "id, kind, subject, auth_set_id, created_at, expires_at",
                  ((t, "device", d, k, stamp, expiry)
                   for d, t, k in zip(ids, token_ids, key_ids, strict=True)))
            _copy(cursor, "device_deployments",
                  "id, deployment_id, device_id, status, created_at, finished_at",
                  ((str(uuid.uuid4()), deployment_id, d, "success", stamp, stamp) for d in ids))
            for i, d, t in zip(batch, ids, token_ids, strict=True):
                if i < phased:
                    phased_ids.append(d)
                if i in picked:
                    tokens.append(jwt.encode(
                        {"iss": "tern", "jti": t, "sub": d, "kind": "device",
                         "iat": int(now.timestamp()), "exp": int(expires.timestamp())},
                        secret, algorithm="HS256"))
                    if i < phased:
                        phased_tokens.append(tokens[-1])
            print(f"  seeded {batch.stop:,} devices", file=sys.stderr, flush=True)
        cursor.execute("ANALYZE")
    random.shuffle(tokens)
    tokens_file.write_text("\n".join(tokens) + "\n")
    phased_file = tokens_file.with_name("phased-tokens.txt")
    phased_file.write_text("\n".join(phased_tokens) + "\n")
    return time.monotonic() - started, phased_ids, phased_file


REGION = "phased-region"


def seed_phased_deployment(postgres: PostgresServer, database: str,
                           device_ids: list[str]) -> tuple[float, str]:
    """A dynamic group (region = REGION in the inventory of `device_ids`, indexed as
    `inventory.service` keeps it) and a deployment to it, open to joiners, of three phases
    (1 %, 9 %, the rest, each after the one before succeeded), paused by its first phase's
    failure threshold: every device pending in its phase. Returns the seconds it took and
    the pause's reason."""
    started = time.monotonic()
    stamp = datetime.now(UTC).isoformat()
    group_filter = json.dumps([{"attribute": "region", "type": "$eq", "value": REGION}])
    deployment_id = str(uuid.uuid4())
    total = len(device_ids)
    sizes = [max(1, total // 100), max(1, total * 9 // 100)]
    sizes.append(total - sum(sizes))
    reason = "phase 1: 2 of 2 finished devices failed, more than the 1 allowed"
    with psycopg.connect(host=str(postgres.directory), port=postgres.port, user="postgres",
                         dbname=database, autocommit=True) as connection:
        cursor = connection.cursor()
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("INSERT INTO dynamic_groups (name, filter, created_at) "
                       "VALUES ('phased', %s, %s)", (group_filter, stamp))
        cursor.execute(
            "INSERT INTO deployments (id, name, artifact_name, force, created_at, retries, "
            "paused_at, pause_reason, dynamic_group, target_filter, open_to_joiners) VALUES "
            "(%s, 'phased', 'release-2', false, %s, 0, %s, %s, 'phased', %s, true)",
            (deployment_id, stamp, stamp, reason, group_filter))
        for number, size in enumerate(sizes):
            cursor.execute(
                "INSERT INTO deployment_phases (deployment_id, number, size, after_success, "
                "on_release, max_failures, started_at, successes, failures) VALUES "
                "(%s, %s, %s, %s, false, 1, %s, 0, %s)",
                (deployment_id, number, size, 100 if number else None,
                 stamp if number == 0 else None, 2 if number == 0 else 0))
        for start in range(0, total, COPY_BATCH):
            batch = device_ids[start:start + COPY_BATCH]
            _copy(cursor, "inventory", "device_id, name, value, updated_at",
                  ((d, "region", f'"{REGION}"', stamp) for d in batch))
            _copy(cursor, "inventory_values", "device_id, name, value, number",
                  ((d, "region", REGION, None) for d in batch))
            _copy(cursor, "device_deployments",
                  "id, deployment_id, device_id, status, created_at, phase, attempts",
                  ((str(uuid.uuid4()), deployment_id, d, "pending", stamp,
                    str(0 if start + i < sizes[0] else 1 if start + i < sizes[0] + sizes[1]
                        else 2), "0")
                   for i, d in enumerate(batch)))
        # the canary's two failures that paused it
        cursor.execute("UPDATE device_deployments SET status = 'failure', finished_at = %s, "
                       "attempts = 1 WHERE deployment_id = %s AND device_id = ANY(%s)",
                       (stamp, deployment_id, device_ids[:2]))
        cursor.execute("ANALYZE")
    return time.monotonic() - started, reason


def explain(postgres: PostgresServer, database: str, tokens_file: Path) -> str:
    """The plan of a poll's one query (the token, its device and whether a poll can have
    anything for it: server.auth with deployments.service.ANYTHING_TO_DO) for one sampled
    device, as PostgreSQL runs it."""
    from sqlalchemy.dialects.postgresql import psycopg as dialect

    from server.auth import device_token_query
    from server.deployments.service import ANYTHING_TO_DO

    query = device_token_query(ANYTHING_TO_DO)
    sql = str(query.compile(dialect=dialect.dialect()))
    jti = jwt.decode(tokens_file.read_text().split("\n", 1)[0],
                     options={"verify_signature": False})["jti"]
    with psycopg.connect(host=str(postgres.directory), port=postgres.port, user="postgres",
                         dbname=database) as connection:
        rows = connection.execute(f"EXPLAIN ANALYZE {sql}", {"jti": jti}).fetchall()
    return "\n".join(row[0] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=10_000, help="devices wrk polls as")
    parser.add_argument("--duration", type=int, default=20, help="seconds per row")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the tern rows this many times, interleaved (the machine drifts)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn and nginx workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--request-log", choices=["json", "off"], default="json")
    parser.add_argument("--phased", type=int, default=100_000,
                        help="devices of the paused phased deployment measured after the "
                             "plain rows (0: none)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install {tool}")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="tern-polls-") as work:
        args.work = work
        postgres = PostgresServer().start()
        server = nginx = None
        try:
            url = postgres.create_database("polls")
            data_dir = Path(work) / "data"
            data_dir.mkdir()
            secret = new_secret()
            (data_dir / "config.json").write_text(json.dumps({"database_url": url}))
            (data_dir / "secret.key").write_text(secret)
            server = LiveServer(data_dir, workers=args.workers, threads=args.threads,
                                request_log=args.request_log)
            server.start(timeout=120)
            tokens_file = Path(work) / "tokens.txt"
            seconds, phased_ids, phased_tokens = seed(postgres, "polls", args.devices, secret,
                                                      args.sample, tokens_file, args.phased)
            print(f"seeded {args.devices:,} devices in {seconds:.0f} s", file=sys.stderr)
            plans = explain(postgres, "polls", tokens_file)
            nginx, nginx_url = start_nginx_204(work, server.certificate, args.workers)
            run_as_devices(server.url, NEXT_V1, tokens_file, argparse.Namespace(
                **{**vars(args), "duration": 3}))  # warm the connection pools and caches
            rows["nginx: return 204"] = [run_as_devices(nginx_url, "/", None, args)]
            for _ in range(args.rounds):
                for name, (path, tokens, method, body) in TERN_ROWS.items():
                    rows.setdefault(name, []).append(run_as_devices(
                        server.url, path, tokens_file if tokens else None, args, method, body))
            if phased_ids:
                seconds, reason = seed_phased_deployment(postgres, "polls", phased_ids)
                print(f"a paused phased deployment to {len(phased_ids):,} devices in "
                      f"{seconds:.0f} s ({reason})", file=sys.stderr)
                share = len(phased_ids) / args.devices
                for _ in range(args.rounds):
                    rows.setdefault(f"tern: GET v1 next, {share:.0%} of the devices in a "
                                    "paused phased deployment (204)", []).append(
                        run_as_devices(server.url, NEXT_V1, tokens_file, args))
                    rows.setdefault("tern: GET v1 next, each device in the paused phased "
                                    "deployment (204)", []).append(
                        run_as_devices(server.url, NEXT_V1, phased_tokens, args))
        finally:
            stop_nginx(nginx)
            if server is not None:
                server.stop()
            postgres.stop()

    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"rows": rows, "load_average_1m": load, "args": {
            k: v for k, v in vars(args).items() if k != "work"}}, indent=2))
        return
    print(f"\n{args.devices:,} devices (wrk polls as {args.sample:,} of them), "
          f"{args.connections} connections, {args.rounds} round(s) of {args.duration} s per row, "
          f"{args.workers} gunicorn workers x {args.threads} threads, PostgreSQL 15, "
          f"{os.cpu_count()} CPUs shared with wrk and PostgreSQL; load average (1 min) after "
          f"the run {load:.1f}\n")
    print("Medians over the rounds; x hello is the median of each round's ratio to the hello "
          "world run just before it (range in brackets).\n")
    print("| endpoint | requests/s | x hello | p50 ms | p99 ms | non-2xx | socket errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in rows.items():
        ratios = sorted(run["per_second"] / hello["per_second"]
                        for run, hello in zip(runs, rows[HELLO], strict=False))
        shown = f"{median(ratios):.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}]" \
            if name != "nginx: return 204" else ""
        print(f"| {name} | {median(r['per_second'] for r in runs):.0f} | {shown} "
              f"| {median(r['p50_ms'] for r in runs):.1f} "
              f"| {median(r['p99_ms'] for r in runs):.1f} | {sum(r['non_2xx'] for r in runs)} "
              f"| {sum(r['socket_errors'] for r in runs)} |")
    poll = rows[POLL]
    ratio = median(p["per_second"] / h["per_second"] for p, h in zip(poll, rows[HELLO],
                                                                     strict=True))
    print(f"\npolls/s {median(p['per_second'] for p in poll):.0f} (goal >= 1000), p99 "
          f"{median(p['p99_ms'] for p in poll):.1f} ms (goal < 100), {ratio:.2f}x hello world "
          f"(goal >= 0.5)")
    print(f"\nQuery plans for one device:\n\n{plans}")


if __name__ == "__main__":
    main()
