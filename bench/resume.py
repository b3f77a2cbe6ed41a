"""The updater's resumable download against a plain streamed `requests` read: a file
served over loopback HTTP (werkzeug, Range support as the server's `send_file`), read in
1 MiB chunks and hashed (as the artifact reader does), directly and through the fault
proxy, without faults and with a connection reset every `--reset-every` MiB.

    .venv/bin/python -m bench.resume [--size-mib 256] [--repeat 3]
"""
import argparse
import hashlib
import io
import logging
import os
import statistics
import sys
import threading
import time

import requests
from werkzeug.serving import make_server
from werkzeug.utils import send_file
from werkzeug.wrappers import Request

from testkit.faultproxy import FaultProxy
from updater.download import ResumableDownload

CHUNK = 1 << 20


def serve(data: bytes) -> int:
    @Request.application
    def app(request):
        return send_file(io.BytesIO(data), request.environ, conditional=True, etag="bench",
                         mimetype="application/octet-stream")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port


def drain(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def plain(url: str) -> str:
    with requests.get(url, stream=True, timeout=60) as response:
        return drain(response.raw)


def resumable(url: str) -> str:
    with ResumableDownload(url, max_backoff=0.0) as download:
        return drain(download)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reset-every", type=int, default=32, metavar="MIB")
    args = parser.parse_args()
    data = os.urandom(args.size_mib << 20)
    expected = hashlib.sha256(data).hexdigest()
    port = serve(data)
    proxy = FaultProxy(port).start()
    direct, proxied = f"http://127.0.0.1:{port}/a", f"http://127.0.0.1:{proxy.port}/a"
    resets = args.size_mib // args.reset_every
    rows = {
        "requests, streamed (baseline)": (plain, direct, None),
        "ResumableDownload": (resumable, direct, None),
        "ResumableDownload, through the proxy": (resumable, proxied, None),
        f"ResumableDownload, through the proxy, {resets} resets": (resumable, proxied, resets),
    }
    times = {name: [] for name in rows}
    for _ in range(args.repeat):
        for name, (read, url, reset_count) in rows.items():
            if reset_count:
                proxy.reset_after(args.reset_every << 20, times=reset_count)
            started = time.perf_counter()
            assert read(url) == expected, name
            times[name].append(time.perf_counter() - started)
            proxy.passing()
    baseline = statistics.median(times["requests, streamed (baseline)"])
    print(f"| read ({args.size_mib} MiB, sha256) | median (s) | MiB/s | vs baseline |")
    print("|---|---:|---:|---:|")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} | {args.size_mib / median:.0f} | "
              f"{median / baseline:.2f}x |")
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
