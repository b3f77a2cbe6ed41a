"""updater.http against local servers: TLS verified against the server's CA file (host name
included), kept-alive connections, a download's redirects, and the proxy variables."""
import http.server
import select
import socket
import socketserver
import ssl
import threading

import pytest
from werkzeug.serving import generate_adhoc_ssl_pair

from updater.http import Connections


class Server(http.server.ThreadingHTTPServer):
    """An HTTP/1.1 (keep-alive) server, TLS with `tls_files`, that records each request's
    path, Range and client port, and answers a redirect to `redirect_to` if set."""
    daemon_threads = True

    def __init__(self, tls_files: tuple[str, str] | None = None, redirect_to: str = "",
                 drop_a_second_request: bool = False):
        self.seen: list[tuple[str, str | None, int]] = []
        self.redirect_to = redirect_to
        self.drop_a_second_request = drop_a_second_request
        super().__init__(("127.0.0.1", 0), Handler)
        if tls_files:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls_files)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        self.server.seen.append((self.path, self.headers.get("Range"), self.client_address[1]))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answered = getattr(self, "answered", 0) + 1
        if self.answered == 2 and self.server.drop_a_second_request:
            # an idle timeout that fires as the request arrives: TCP FIN, no TLS close_notify
            self.server.drop_a_second_request = False
            self.request.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            body = b""
        else:
            self.send_response(200)
            body = f"hello {self.command} ".encode() + body
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


@pytest.fixture
def tls_files(tmp_path):
    certificate, key = generate_adhoc_ssl_pair(cn="localhost")
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "server.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return str(tmp_path / "server.crt"), str(tmp_path / "server.key")


@pytest.fixture
def servers():
    made = []
    yield lambda *args, **kwargs: made.append(Server(*args, **kwargs)) or made[-1]
    for server in made:
        server.shutdown()


def test_tls_is_verified_against_the_servers_ca_file_host_name_included(servers, tls_files):
    server = servers(tls_files)
    connections = Connections(verify=tls_files[0])
    answer = connections.request("POST", f"https://localhost:{server.port}/api", b"body")
    assert (answer.status, answer.body) == (200, b"hello POST body")
    with pytest.raises(ssl.SSLCertVerificationError, match="self.signed|unable to get local"):
        Connections().request("GET", f"https://localhost:{server.port}/api")  # system CAs
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        Connections(verify=tls_files[0]).request("GET", f"https://127.0.0.1:{server.port}/")


def test_api_calls_share_one_kept_alive_connection(servers, tls_files):
    server = servers(tls_files)
    connections = Connections(verify=tls_files[0])
    for _ in range(3):
        assert connections.request("GET", f"https://localhost:{server.port}/poll").status == 200
    assert len({port for _, _, port in server.seen}) == 1
    connections.close()
    connections.request("GET", f"https://localhost:{server.port}/poll")
    assert len({port for _, _, port in server.seen}) == 2


def test_a_connection_the_server_closed_while_idle_is_replaced(servers):
    server = servers()
    connections = Connections()
    connections.request("GET", f"http://127.0.0.1:{server.port}/a")
    kept = next(iter(connections.kept.values()))
    kept.sock.shutdown(socket.SHUT_RDWR)  # as an idle timeout on the server's side
    assert connections.request("GET", f"http://127.0.0.1:{server.port}/b").status == 200
    assert [path for path, _, _ in server.seen] == ["/a", "/b"]


def test_a_kept_alive_tls_connection_closed_as_a_request_arrives_is_replaced(servers,
                                                                           tls_files):
    """The race an idle timeout leaves open past the check for a closed connection: the
    request goes out, the server closes without TLS's close_notify, the client reads "EOF
    occurred in violation of protocol" and sends it again on a new connection."""
    server = servers(tls_files, drop_a_second_request=True)
    connections = Connections(verify=tls_files[0])
    url = f"https://localhost:{server.port}"
    assert connections.request("POST", f"{url}/a", b"1").status == 200
    assert connections.request("POST", f"{url}/b", b"2").body == b"hello POST 2"
    assert [path for path, _, _ in server.seen] == ["/a", "/b", "/b"]
    ports = [port for _, _, port in server.seen]
    assert ports[0] == ports[1] != ports[2]


def test_a_download_follows_redirects_with_its_range_an_api_call_does_not(servers):
    store = servers()
    link = f"http://127.0.0.1:{store.port}/bucket/artifact?X-Amz-Signature=abc"
    front = servers(redirect_to=link)
    stream = Connections().open(f"http://127.0.0.1:{front.port}/download",
                                {"Range": "bytes=5-"}, (5.0, 5.0))
    assert (stream.status, stream.url, stream.read(100)) == (200, link, b"hello GET ")
    stream.close()
    assert store.seen[0][:2] == ("/bucket/artifact?X-Amz-Signature=abc", "bytes=5-")
    answer = Connections().request("GET", f"http://127.0.0.1:{front.port}/api")
    assert answer.status == 302 and len(store.seen) == 1


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that only tunnels (CONNECT), and remembers where to."""
    daemon_threads = True

    def __init__(self):
        self.tunnels: list[str] = []
        super().__init__(("127.0.0.1", 0), self.Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            target = self.rfile.readline().split()[1].decode()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.server.tunnels.append(target)
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection(("127.0.0.1", int(port)))
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            sockets = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 5)
                for ready in readable:
                    data = ready.recv(65536)
                    if not data:
                        return upstream.close()
                    (upstream if ready is self.connection else self.connection).sendall(data)


def test_https_goes_through_the_proxy_of_the_environment_unless_no_proxy(
        servers, tls_files, monkeypatch):
    server = servers(tls_files)
    proxy = ConnectProxy()
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("no_proxy", "example.org")
    url = f"https://localhost:{server.port}/api"
    assert Connections(verify=tls_files[0]).request("GET", url).status == 200
    assert proxy.tunnels == [f"localhost:{server.port}"]
    with pytest.raises(ssl.SSLCertVerificationError):  # TLS is still checked end to end
        Connections().request("GET", url)
    monkeypatch.setenv("no_proxy", "localhost")
    assert Connections(verify=tls_files[0]).request("GET", url).status == 200
    assert len(proxy.tunnels) == 2
    proxy.shutdown()
