"""`tern-server serve` (gunicorn over HTTPS, its default 2 workers x 4 threads) against slow
clients, busy ports and restarts: what an attacker or a careless operator would try."""
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from server.worker import BODY_WINDOW_SECONDS, HEADER_SECONDS
from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer
from testkit.trickle import Trickler, latencies

pytestmark = pytest.mark.slow

HEALTH = "/api/health"


def test_trickling_clients_cost_no_thread_and_are_dropped_at_their_deadline(tmp_path,
                                                                             large_artifact):
    server = LiveServer(tmp_path / "data", workers=2, threads=4).start()
    try:
        admin = ServerAdmin(server)
        kinds = ["handshake", "headers", "body"] * 16 + ["upload"] * 2
        with Trickler("127.0.0.1", server.port, kinds, token=admin.token,
                      artifact=large_artifact) as trickler:
            time.sleep(1.5)  # every trickle connected and started (old gthread: every thread)
            during = latencies(server.url + HEALTH, server.certificate, seconds=6)
            assert max(during) < 3.0, f"a normal client's requests took {sorted(during)[-5:]} s"
            wait_for(lambda: all(t.closed_after for t in trickler.trickles), timeout=20,
                     interval=0.2, what="the server to close every trickling connection")
        assert all(t.error == "" for t in trickler.trickles if t.closed_after is None)
        for trickle in trickler.trickles:
            limit = HEADER_SECONDS if trickle.kind in ("handshake", "headers") \
                else BODY_WINDOW_SECONDS
            assert limit - 1 < trickle.closed_after < limit + 8, trickle  # a loaded CI
        assert admin.get("/artifacts") == []  # the stalled uploads were not kept
        log = server.output.read_text()
        assert "Traceback" not in log and '"status": 500' not in log, log[-3000:]
        # and a whole upload of the same artifact still streams through
        uploaded = admin.cli("--server", server.url, "--ca-cert", str(server.certificate),
                             "--token", admin.token, "artifacts", "upload", str(large_artifact))
        assert uploaded["size"] == large_artifact.stat().st_size
    finally:
        server.stop()


def test_expect_100_continue_is_answered_before_the_body(tmp_path):
    """The front waits for whole bodies, so it must answer `Expect: 100-continue` itself (a
    client that waits for it would otherwise wait for nothing), and only once."""
    server = LiveServer(tmp_path / "data").start()
    try:
        body = b'{"id_data": 1}'
        context = ssl.create_default_context(cafile=server.certificate)
        with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                 server_hostname="127.0.0.1") as sock:
            sock.settimeout(5)
            sock.sendall(b"POST /api/devices/v1/authentication/auth_requests HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(body)
            response = b""
            while b"request_id" not in response:
                response += sock.recv(4096)
        status, _, rest = response.partition(b"\r\n")
        assert status == b"HTTP/1.1 400 BAD REQUEST" and b"100 Continue" not in rest
        assert b'"error":"expected {id_data: JSON string, pubkey: PEM string}"' in rest
    finally:
        server.stop()


def test_a_second_serve_on_a_busy_port_fails_at_once(tmp_path):
    first = LiveServer(tmp_path / "first").start()
    try:
        second = LiveServer(tmp_path / "second")
        subprocess.run(second.command("init"), check=True, capture_output=True)
        started = time.monotonic()
        try:
            result = subprocess.run(second.command("serve", "--bind", f"127.0.0.1:{first.port}"),
                                    capture_output=True, text=True, timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("a second serve on a busy port kept running (sharing the port)")
        assert result.returncode != 0 and time.monotonic() - started < 10
        assert result.stderr.strip().splitlines() == [
            f"Error: cannot listen on 127.0.0.1:{first.port}: Address already in use "
            "(another server runs there?)"]
    finally:
        first.stop()


def test_a_restart_strands_no_connection(tmp_path):
    """On HUP gunicorn starts new workers and stops the old ones gracefully. An old worker
    that still serves a connection (here, a trickling one) must not keep its listener: the
    kernel would keep giving it new connections that it never accepts."""
    server = LiveServer(tmp_path / "data", workers=1).start()
    try:
        with Trickler("127.0.0.1", server.port, ["headers"]):
            time.sleep(1)
            os.kill(server.process.pid, signal.SIGHUP)
            # (the new worker's listener queues connections while it loads the app)
            after = latencies(server.url + HEALTH, server.certificate, seconds=5,
                              interval=0.1, timeout=8)
        failed = sum(t == float("inf") for t in after)
        assert failed == 0, f"{failed} of {len(after)} requests after HUP failed"
    finally:
        server.stop()

