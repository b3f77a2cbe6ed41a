"""An artifact's HTTP(S) download that survives broken connections.

`ResumableDownload` is a file-like object over the response body. When the connection
breaks, or stalls (no data for `timeout` seconds), it reopens the download with
`Range: bytes=<offset>-` and goes on from the same byte, so the reader above it (the
signature and sha256 checks, the slot writer) never sees the break. Reconnections in a
row without new data are bounded (`retries`, with backoff), and so is the whole
download (`deadline`); past either, `DownloadError` says why.

It may also start at a byte (`start`) and stop before one (`end`): after a power cut the
updater reads the artifact's head again, then goes on from where the slot's write got to,
with the ETag it first saw in `If-Range` so that a changed artifact is refused.
"""
import http.client
import re
import time
import urllib.parse

from .http import Connections, HttpError, Stream

CONNECT_TIMEOUT = 30.0
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# What a broken, reset or stalled connection raises: the socket's, ssl's and http's errors
# (a requests session given as `connections` raises its own, which are OSErrors too).
BROKEN = (OSError, http.client.HTTPException)


class DownloadError(Exception):
    """The download cannot go on; the message says why. (Not an OSError: the artifact
    reader would take it for a damaged archive.)"""


class ResumableDownload:
    def __init__(self, url: str, *, verify=True, retries: int = 10, timeout: float = 60.0,
                 deadline: float = 14400.0, max_backoff: float = 30.0,
                 log=lambda message: None, check=lambda: None,
                 connections: Connections | None = None, start: int = 0,
                 end: int | None = None, etag: str | None = None):
        """`log(message)` hears every reconnection; `check()` runs before each connection
        and each read, and whatever it raises ends the download (the daemon's abort check,
        which throttles itself). `connections`: what opens the URL (by default the standard
        library's, `updater.http`; the fleet simulator's go through its pooled sessions).
        `start`, `end`: the bytes [start, end) only; `etag`: the artifact's, as an earlier
        download saw it (a different artifact under the URL is refused)."""
        self.url = url
        self.retries = retries
        self.timeout = timeout
        self.deadline_seconds = deadline
        self.deadline = time.monotonic() + deadline
        self.max_backoff = max_backoff
        self.log = log
        self.check = check
        self.connections = connections or Connections(verify)
        self.offset = start
        self.end = end
        self.size: int | None = None  # the artifact's, from the first answer
        self.etag = etag
        self.response: Stream | None = None
        self.resumed = 0  # answers to Range requests
        self.failures = 0  # in a row, without new data
        self._open_with_retries()

    def read(self, size: int = -1) -> bytes:
        while True:
            self._check_deadline()
            self.check()
            try:
                data = self.response.read(size if size >= 0 else None)
            except BROKEN as error:
                reason = f"{type(error).__name__}: {error}"
            else:
                stop = self.size if self.end is None else self.end
                if data or size == 0 or stop in (None, self.offset):
                    self.offset += len(data)
                    self.failures = 0
                    return data
                reason = "the connection closed early"
            self._failed(reason)
            self._open_with_retries()

    def close(self) -> None:
        if self.response is not None:
            self.response.close()

    def __enter__(self) -> "ResumableDownload":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- connecting -----------------------------------------------------------------------

    def _open_with_retries(self) -> None:
        while True:
            self._check_deadline()
            self.check()
            try:
                self._open()
                return
            except BROKEN as error:
                self._failed(f"{type(error).__name__}: {error}")

    def _open(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None
        headers = {"Accept-Encoding": "identity"}  # offsets count the artifact's own bytes
        ranged = bool(self.offset) or self.end is not None
        if ranged:
            last = "" if self.end is None else str(self.end - 1)
            headers["Range"] = f"bytes={self.offset}-{last}"
            if self.etag:
                headers["If-Range"] = self.etag  # changed since: 200, refused below
        remaining = self.deadline - time.monotonic()
        response = self.connections.open(
            self.url, headers, (min(CONNECT_TIMEOUT, remaining), min(self.timeout, remaining)))
        if response.status >= 500:
            response.close()
            raise HttpError(f"{response.status} {response.reason}")
        if ranged:
            self._check_partial(response)
            self.resumed += 1
            if self.offset:
                self.log(f"download: resumed at byte {self.offset} of {self.size}")
        else:
            if response.status != 200:
                response.close()
                raise DownloadError(f"GET {_redacted(self.url)}: {response.status} "
                                    f"{response.reason}")
            self.size = _int_or_none(response.headers.get("Content-Length"))
            self.etag = response.headers.get("ETag")
        self.response = response

    def _check_partial(self, response: Stream) -> None:
        """A resumed answer must be 206 with the range asked for; anything else would
        splice the wrong bytes into the stream."""
        if response.status != 206:
            response.close()
            changed = " (the artifact changed)" if response.status == 200 and self.etag \
                else ""
            raise DownloadError(f"cannot resume at byte {self.offset}: the server answered "
                                f"{response.status} {response.reason} to a Range "
                                f"request{changed}")
        match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or int(match[1]) != self.offset or \
                (self.size is not None and match[3] != str(self.size)) or \
                (self.end is not None and int(match[2]) != self.end - 1):
            response.close()
            raise DownloadError(f"cannot resume {self._position()}: "
                                f"Content-Range {response.headers.get('Content-Range')!r}")
        if self.size is None:
            self.size = _int_or_none(match[3])
            self.etag = self.etag or response.headers.get("ETag")

    def _failed(self, reason: str) -> None:
        """Count a failure, give up past `retries`, else wait before the next attempt."""
        self.failures += 1
        where = self._position()
        if self.failures > self.retries:
            raise DownloadError(f"download failed {where}: {reason}; {self.retries} "
                                "retries without progress")
        delay = min(2.0 ** (self.failures - 1), self.max_backoff,
                    max(0.0, self.deadline - time.monotonic()))
        self.log(f"download interrupted {where}: {reason}; retry {self.failures} of "
                 f"{self.retries} in {delay:.0f} s")
        time.sleep(delay)

    def _check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise DownloadError(f"download deadline of {self.deadline_seconds:g} s passed "
                                f"{self._position()}")

    def _position(self) -> str:
        if self.size is None and not self.offset:
            return "connecting"
        return f"at byte {self.offset}" + (f" of {self.size}" if self.size is not None else "")


def _redacted(url: str) -> str:
    """Without the query: a download link's signature is a credential."""
    return urllib.parse.urlsplit(url)._replace(query="").geturl()


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
