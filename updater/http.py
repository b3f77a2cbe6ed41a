"""HTTP(S) for the device on the standard library (`http.client` + `ssl`).

The daemon's process stays resident between polls, and requests with urllib3 and idna
cost it about 6 MiB and 5 s of start-up on the emulated device (BENCHMARKS.md): the agent
needs only what is here. TLS is verified against the system's CAs or the server's own CA
file, host name included; the `*_proxy` environment variables are honoured as requests
honours them (urllib.request reads them, imported only when one is set); a download
follows redirects (to an object store's signed link), an API call does not.

Every failure to get an answer is an `OSError`: the socket's and ssl's own, and
`HttpError` for http.client's protocol errors and too many redirects.
"""
import base64
import http.client
import os
import select
import ssl
import urllib.parse
from dataclasses import dataclass
from email.message import Message

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10


class HttpError(OSError):
    """No usable answer: a broken one, or a loop of redirects."""


@dataclass
class Answer:
    """An API call's whole answer."""
    status: int
    reason: str
    headers: Message
    body: bytes


class Stream:
    """A streamed answer (a download); closing it closes its connection."""

    def __init__(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse, url: str):
        self.connection, self.response, self.url = connection, response, url
        self.status, self.reason, self.headers = response.status, response.reason, \
            response.headers

    def read(self, size: int | None = None) -> bytes:
        try:
            return self.response.read(size)
        except http.client.HTTPException as error:
            raise HttpError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        self.response.close()
        self.connection.close()


class Connections:
    """Kept-alive connections to the servers the device talks to, one per origin.
    `verify`: True (the system's CAs) or a CA file (a server with its own certificate)."""

    def __init__(self, verify: bool | str = True):
        self.verify = verify
        self.context: ssl.SSLContext | None = None
        self.kept: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> Answer:
        """One call on the origin's kept-alive connection; a connection the server closed
        while idle is replaced once, before anything was answered."""
        parts = urllib.parse.urlsplit(url)
        origin = _origin(parts)
        for attempt in range(2):
            connection = self.kept.pop(origin, None)
            reused = connection is not None and not _dropped(connection)
            if not reused:
                if connection is not None:
                    connection.close()
                connection = self._connect(parts, timeout, timeout)
            try:
                target, sent = _target(parts, headers)
                connection.request(method, target, body=body, headers=sent)
                response = connection.getresponse()
                answer = Answer(response.status, response.reason, response.headers,
                                response.read())
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                stale = isinstance(error, (http.client.RemoteDisconnected, BrokenPipeError,
                                           ConnectionResetError))
                if reused and stale and not attempt:
                    continue
                if isinstance(error, http.client.HTTPException):
                    raise HttpError(f"{type(error).__name__}: {error}") from error
                raise
            if response.will_close:
                connection.close()
            else:
                self.kept[origin] = connection
            return answer
        raise AssertionError("unreachable")

    def open(self, url: str, headers: dict[str, str], timeout: tuple[float, float]) -> Stream:
        """GET `url` for streaming, following redirects; `timeout`: (connect, read)."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            connection = self._connect(parts, *timeout)
            try:
                target, sent = _target(parts, headers)
                connection.request("GET", target, headers=sent)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                if isinstance(error, http.client.HTTPException):
                    raise HttpError(f"{type(error).__name__}: {error}") from error
                raise
            location = response.headers.get("Location")
            if response.status not in REDIRECTS or not location:
                return Stream(connection, response, url)
            response.close()
            connection.close()
            url = urllib.parse.urljoin(url, location)
        raise HttpError(f"more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        for connection in self.kept.values():
            connection.close()
        self.kept.clear()

    def _connect(self, parts: urllib.parse.SplitResult, connect_timeout: float,
                 read_timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = _origin(parts)
        proxy = _proxy(scheme, host)
        address = (host, port) if proxy is None else (proxy.hostname, proxy.port or 80)
        if scheme == "https":
            connection = http.client.HTTPSConnection(*address, timeout=connect_timeout,
                                                     context=self._tls())
            if proxy is not None:  # CONNECT through it, TLS end to end
                connection.set_tunnel(host, port, headers=_proxy_authorization(proxy))
        else:
            connection = http.client.HTTPConnection(*address, timeout=connect_timeout)
        connection.connect()
        connection.sock.settimeout(read_timeout)
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self.context is None:
            cafile = self.verify if isinstance(self.verify, str) else None
            self.context = ssl.create_default_context(cafile=cafile)
        return self.context


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {parts.scheme}://{parts.netloc}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _target(parts: urllib.parse.SplitResult, headers: dict[str, str] | None = None,
            ) -> tuple[str, dict[str, str]]:
    """The request line's target and the headers: the path, or the whole URL (and the
    proxy's credentials) through a plain HTTP proxy."""
    headers = dict(headers or {})
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = _proxy(parts.scheme, parts.hostname) if parts.scheme == "http" else None
    if proxy is not None:
        target = urllib.parse.urlunsplit(parts._replace(fragment=""))
        headers.update(_proxy_authorization(proxy))
    return target, headers


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server has closed reads as ready (EOF)."""
    if connection.sock is None:
        return True
    readable, _, _ = select.select([connection.sock], [], [], 0)
    return bool(readable)


def _proxy(scheme: str, host: str) -> urllib.parse.SplitResult | None:
    """The proxy for `scheme` from the environment, unless `no_proxy` names the host."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    import urllib.request  # only then: it pulls in much of the stdlib

    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise HttpError(f"unsupported {scheme} proxy {parts.scheme}://{parts.hostname}: "
                        "only http:// proxies")
    return parts


def _proxy_authorization(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    credentials = f"{urllib.parse.unquote(proxy.username)}:" \
                  f"{urllib.parse.unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
