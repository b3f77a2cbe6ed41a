"""For tests of the adaptive install: one file over plain HTTP on loopback, with single-range
`Range` requests (and `If-Range`), counting the bytes of its answers. It can also misbehave
as some servers and proxies do: ignore Range (answer 200 with the whole file), or flip a
byte at a given offset in its partial answers only (a damaged range, the full file intact).
"""
import http.server
import re
import threading
from pathlib import Path

RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CHUNK = 64 << 10


class RangeFileServer:
    def __init__(self, path: Path, port: int = 0):
        """`port`: 0 for a free one; a fixed one for a URL that outlives this server (a
        replay's recorded states resume their download from it)."""
        self.path = path
        self.port = port
        self.ignore_range = False
        self.corrupt_at: int | None = None  # artifact offset flipped in 206 answers
        self.sent = 0  # body bytes of every answer
        self.ranges: list[str] = []  # the Range header of each request ("" without)
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{self.path.name}"

    @property
    def guest_url(self) -> str:
        """The URL as an emulated device sees it (QEMU's user network: the host is 10.0.2.2)."""
        return self.url.replace("127.0.0.1", "10.0.2.2")

    def __enter__(self) -> "RangeFileServer":
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner._answer(self)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        size = self.path.stat().st_size
        etag = f'"{self.path.stat().st_mtime_ns:x}-{size:x}"'
        asked = handler.headers.get("Range", "")
        with self.lock:
            self.ranges.append(asked)
        match = RANGE.fullmatch(asked)
        partial = match and not self.ignore_range and \
            handler.headers.get("If-Range", etag) == etag
        start, end = 0, size
        if partial:
            if match[1]:
                start, end = int(match[1]), min(size, int(match[2]) + 1 if match[2] else size)
            else:
                start = max(0, size - int(match[2]))
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(end - start))
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        with open(self.path, "rb") as file:
            file.seek(start)
            position = start
            while position < end:
                data = bytearray(file.read(min(CHUNK, end - position)))
                if partial and self.corrupt_at is not None and \
                        position <= self.corrupt_at < position + len(data):
                    data[self.corrupt_at - position] ^= 0xFF
                try:
                    handler.wfile.write(data)
                except OSError:
                    return
                position += len(data)
                with self.lock:
                    self.sent += len(data)
