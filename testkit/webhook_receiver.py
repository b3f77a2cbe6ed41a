"""A webhook receiver on loopback: it records each delivery, checks nothing itself, and can
refuse the first attempts (HTTP 503) to exercise the server's retries."""
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """`url` to configure; `received`: (headers, body) of each delivery it took, in arrival
    order; `attempts`: every POST, refused ones included. A context manager."""

    def __init__(self, failures: int = 0):
        self.failures, self.attempts, self.received = failures, 0, []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.attempts += 1
                    refused = receiver.attempts <= receiver.failures
                    if not refused:
                        receiver.received.append((dict(self.headers), body))
                self.send_response(503 if refused else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, secret: str) -> list[dict]:
        """The events received, each checked against its headers and signature (an
        AssertionError says which is wrong)."""
        found = []
        for headers, body in list(self.received):
            signed = hmac.new(secret.encode(),
                              headers["X-Tern-Timestamp"].encode() + b"." + body,
                              hashlib.sha256).hexdigest()
            assert headers["X-Tern-Signature"] == f"sha256={signed}", headers
            event = json.loads(body)
            assert headers["X-Tern-Event-Id"] == str(event["id"]), headers
            assert headers["X-Tern-Event"] == event["type"], headers
            found.append(event)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
