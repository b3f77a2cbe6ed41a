"""For tests and benches: slow clients (slowloris) against a server over HTTPS, and a normal
client's latency beside them.

A `Trickler` opens connections that each send one byte a second and never finish: a TLS
ClientHello (`handshake`), request headers (`headers`), a small request body (`body`), or an
artifact upload that sends its first MiB fast and then stalls (`upload`, with a token and an
artifact). Each runs in its own thread until stopped or until the server closes it; when the
server closed it is recorded.
"""
import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KINDS = ("handshake", "headers", "body", "upload")
FAST_UPLOAD_BYTES = 3 << 19  # 1.5 MiB: past what the server's front buffers


@dataclass
class Trickle:
    kind: str
    opened: float = 0.0  # connected, or for bodies, when the headers were sent
    closed_after: float | None = None  # seconds from `opened` to the server closing it
    error: str = ""  # why it could not even start


class Trickler:
    def __init__(self, host: str, port: int, kinds: list[str], interval: float = 1.0,
                 token: str = "", artifact: Path | None = None):
        self.host, self.port, self.interval = host, port, interval
        self.token, self.artifact = token, artifact
        self.trickles = [Trickle(kind) for kind in kinds]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in self.trickles]

    def start(self) -> "Trickler":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> "Trickler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context

    def _run(self, trickle: Trickle) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
        except OSError as e:
            trickle.error = str(e)
            return
        trickle.opened = time.monotonic()
        try:
            first, rest = self._request(trickle.kind, sock)
            if trickle.kind != "handshake":
                sock = self._context().wrap_socket(sock)
            sock.sendall(first)
            if first:  # the server's deadline for a body counts from its headers
                trickle.opened = time.monotonic()
        except OSError as e:  # the server closed it already
            trickle.closed_after = time.monotonic() - trickle.opened
            trickle.error = str(e)
            return
        with sock:
            for byte in rest:
                if self._stop.is_set():
                    return
                try:
                    sock.sendall(bytes([byte]))
                    sock.settimeout(self.interval)
                    while sock.recv(4096):  # a response (an error), then the server closes
                        pass
                except TimeoutError:
                    continue  # still open: the next byte
                except OSError:
                    pass
                trickle.closed_after = time.monotonic() - trickle.opened
                return

    def _request(self, kind: str, sock: socket.socket) -> tuple[bytes, bytes]:
        """What to send at once, and what to send a byte at a time (more than ever gets sent)."""
        endless = b"a" * 100_000
        host = f"Host: {self.host}:{self.port}\r\n".encode()
        if kind == "handshake":
            hello = ssl.MemoryBIO()
            handshake = self._context().wrap_bio(ssl.MemoryBIO(), hello)
            with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
                handshake.do_handshake()
            return b"", hello.read()
        if kind == "headers":
            return b"", (b"GET /api/health HTTP/1.1\r\n" + host + b"X-Slow: " + endless)
        if kind == "body":
            return (b"POST /api/devices/v1/authentication/auth_requests HTTP/1.1\r\n" + host
                    + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
                    endless)
        if kind == "upload":
            artifact = self.artifact.read_bytes()
            head = (b"POST /api/management/v1/artifacts HTTP/1.1\r\n" + host
                    + f"Authorization: Bearer {self.token}\r\n".encode()
                    + f"Content-Length: {len(artifact)}\r\n\r\n".encode())
            return head + artifact[:FAST_UPLOAD_BYTES], artifact[FAST_UPLOAD_BYTES:]
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")


def latencies(url: str, verify, seconds: float, interval: float = 0.2,
              timeout: float = 5.0) -> list[float]:
    """A normal client: GET `url` on a new connection every `interval` for `seconds`; each
    request's seconds, or `inf` for one that failed or timed out."""
    import requests

    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            ok = requests.get(url, verify=verify, timeout=timeout).status_code < 500
        except requests.RequestException:
            ok = False
        times.append(time.monotonic() - started if ok else float("inf"))
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return times
