"""A directory of the host served over HTTP to emulated devices (QEMU's user network)."""
import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` on loopback; yields its URL as the guest sees it (host 10.0.2.2)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://10.0.2.2:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
