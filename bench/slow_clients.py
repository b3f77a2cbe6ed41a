#!/usr/bin/env python3
"""A normal client's latency with and without slow clients trickling (issue 15).

    python -m bench.slow_clients [--trickling 50] [--seconds 8] [--workers 2] [--threads 4]

`tern-server serve` over HTTPS on loopback; a normal client GETs `/api/health` on a new
connection (a fresh TLS handshake, as a polling device) every 0.2 s, first alone, then
beside `--trickling` connections sending a TLS ClientHello, request headers or a request
body one byte a second (`testkit.trickle`). A request that fails or takes over 5 s counts as
failed. The trickling connections start 1.5 s before the measurement.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from testkit.live_server import LiveServer
from testkit.trickle import Trickler, latencies


def row(name: str, times: list[float]) -> str:
    answered = sorted(t for t in times if t != float("inf"))
    cells = ["-", "-", "-"]
    if len(answered) > 1:
        percentiles = statistics.quantiles(answered, n=100, method="inclusive")
        cells = [f"{1000 * ms:.0f}" for ms in (percentiles[49], percentiles[98], answered[-1])]
    return f"| {name} | {len(times)} | {len(times) - len(answered)} | {' | '.join(cells)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trickling", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8, help="of measurement per row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    kinds = [("handshake", "headers", "body")[i % 3] for i in range(args.trickling)]
    with tempfile.TemporaryDirectory(prefix="tern-bench-slow-") as work:
        server = LiveServer(Path(work) / "data", workers=args.workers, threads=args.threads,
                            request_log="off").start()
        try:
            url, verify = server.url + "/api/health", server.certificate
            alone = latencies(url, verify, args.seconds)
            with Trickler("127.0.0.1", server.port, kinds):
                time.sleep(1.5)
                beside = latencies(url, verify, args.seconds)
        finally:
            server.stop()
    print(f"\n`serve` {args.workers} workers x {args.threads} threads; a normal client's "
          f"GET /api/health, new connection each, every 0.2 s for {args.seconds:g} s")
    print("| normal client | requests | failed (>5 s) | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(row("alone", alone))
    print(row(f"beside {args.trickling} trickling connections", beside))


if __name__ == "__main__":
    main()
