"""A directory of the host served over HTTP (or HTTPS) to emulated devices (QEMU's user
network)."""
import contextlib
import functools
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serve_directory(directory: Path, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `directory` on loopback, over HTTPS with the server context `tls`; yields its URL
    as the guest sees it (host 10.0.2.2)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://10.0.2.2:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
