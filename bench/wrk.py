"""wrk and nginx for the HTTP benchmarks (bench/server.py, polls.py, download.py).

Each wrk script ends with `DONE`, which prints one RESULT line of wrk's own counts; `run`
parses it. `start_nginx` runs nginx in the foreground on a config written into `work`.
"""
import json
import re
import subprocess
import time
from pathlib import Path

from testkit import free_port

DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\\n", summary.requests, summary.bytes,
    summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""

# Requests as the devices of a token file (one JWT a line), rotating from a random start.
AS_DEVICES = """
tokens = {}
for line in io.lines(%(tokens)s) do tokens[#tokens + 1] = line end
local i = math.random(#tokens)
request = function()
  i = i %% #tokens + 1
  return wrk.format(%(method)s, %(path)s, {["Authorization"] = "Bearer " .. tokens[i],
                    ["Content-Type"] = "application/json"}, %(body)s)
end
"""

NGINX_HEAD = """
worker_processes %(workers)d;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 1024; }
"""
TEMP_PATHS = """
  client_body_temp_path %(dir)s/body; proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi; uwsgi_temp_path %(dir)s/uwsgi; scgi_temp_path %(dir)s/scgi;
"""
NGINX_204 = NGINX_HEAD + """
http {
  access_log off;""" + TEMP_PATHS + """
  server {
    listen 127.0.0.1:%(port)d ssl;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    location / { return 204; }
  }
}
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def run(url: str, script: str, work: Path, *, connections: int, duration: int,
        threads: int = 1, timeout: int | None = None) -> dict:
    """wrk with `script` (plus DONE) against `url`: its counts, per second and in ms."""
    path = Path(work) / "wrk.lua"
    path.write_text(script + DONE)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
               "-s", str(path), url]
    if timeout:
        command[1:1] = ["--timeout", f"{timeout}s"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", result.stdout)
    requests, body_bytes, duration_us, p50, p99, bad_status, socket_errors = map(
        int, match.groups())
    return {"requests": requests, "per_second": requests / (duration_us / 1e6),
            "mb_per_second": body_bytes / duration_us, "p50_ms": p50 / 1000,
            "p99_ms": p99 / 1000, "non_2xx": bad_status, "socket_errors": socket_errors}


def run_as_devices(url: str, path: str, tokens_file: Path | None, args, method="GET",
                   body=None) -> dict:
    """`method path` as the devices of `tokens_file` (None: no token) with `args.connections`
    for `args.duration` s."""
    work = Path(args.work)
    if tokens_file is None:
        tokens_file = work / "no-tokens"
        tokens_file.write_text("-\n")
    script = AS_DEVICES % {"tokens": lua_string(str(tokens_file)), "method": lua_string(method),
                           "path": lua_string(path), "body": lua_string(body) if body else "nil"}
    return run(url, script, work, connections=args.connections, duration=args.duration,
               threads=args.wrk_threads)


def start_nginx(work: Path, conf: str, **values) -> subprocess.Popen:
    """nginx on `conf` (NGINX_HEAD's keys: `workers`; `dir` is `work`), once it has bound."""
    path = Path(work) / "nginx.conf"
    path.write_text(conf % {"dir": work, **values})
    process = subprocess.Popen(["nginx", "-c", str(path), "-g", "daemon off;"],
                               stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process


def start_nginx_204(work: Path, certificate: Path, workers: int) -> tuple[subprocess.Popen, str]:
    """nginx answering 204 over TLS with `certificate` (and its `server.key`): process, URL."""
    port = free_port()
    process = start_nginx(work, NGINX_204, workers=workers, port=port, cert=certificate,
                          key=certificate.with_name("server.key"))
    return process, f"https://127.0.0.1:{port}"


def stop_nginx(process: subprocess.Popen | None) -> None:
    if process is not None:
        process.terminate()
        process.wait()
