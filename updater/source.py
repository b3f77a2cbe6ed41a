"""Where Download reads an artifact: a local file, or an HTTP(S) URL streamed through
`ResumableDownload` with the config's retries, timeout and deadline."""
import contextlib
import os
import urllib.parse
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .config import Config


class ArtifactSource:
    """`verify`: True (the system's CAs) or a CA file (a server with its own certificate);
    `connections`: what opens the URLs (`updater.http.Connections` by default; the fleet
    simulator's share a pool per thread)."""

    def __init__(self, config: Config, verify: bool | str = True, connections=None):
        self.config = config
        self.verify = verify
        self.connections = connections

    @contextlib.contextmanager
    def open(self, location: str, log: Callable[[str], None] = lambda message: None,
             check: Callable[[], None] = lambda: None, start: int = 0,
             end: int | None = None, etag: str | None = None,
             connections=None) -> Iterator[BinaryIO]:
        """The bytes [start, end) of the artifact (`end` None: to its end); `etag`: as an
        earlier download saw it (`size` and `etag` of the stream tell them); `connections`:
        to download through instead of this source's."""
        if urllib.parse.urlsplit(location).scheme not in ("http", "https"):
            with open(location, "rb") as file:
                file.seek(start)
                yield LocalFile(file, end)
            return
        from .download import ResumableDownload  # only here: http.client is not needed before

        with ResumableDownload(location, verify=self.verify,
                               retries=self.config.download_retries,
                               timeout=self.config.download_timeout,
                               deadline=self.config.download_deadline,
                               max_backoff=self.config.retry_interval,
                               log=log, check=check,
                               connections=connections or self.connections, start=start,
                               end=end, etag=etag) as download:
            yield download


class LocalFile:
    """A local artifact as a stream: its size, no ETag; reads stop at `end`."""

    def __init__(self, file: BinaryIO, end: int | None):
        self.file = file
        self.size = os.fstat(file.fileno()).st_size
        self.etag = None
        self.end = self.size if end is None else min(end, self.size)

    def read(self, size: int = -1) -> bytes:
        left = self.end - self.file.tell()
        return self.file.read(left if size < 0 else min(size, left))


class RangeFetcher:
    """An artifact fetched in pieces (the adaptive install): first its head, the first
    `HEAD_PROBE` bytes, whose answer gives the artifact's size and ETag; then any ranges,
    refused if the artifact changed since (If-Range), with one TLS context for them all.
    `fetched` counts the bytes asked for."""

    HEAD_PROBE = 64 << 10  # the head of an artifact with a block index is a few KiB

    def __init__(self, source: ArtifactSource, location: str, log: Callable[[str], None],
                 check: Callable[[], None]):
        self.source = source
        self.location = location
        self.log = log
        self.check = check
        self.size = 0
        self.etag: str | None = None
        self.fetched = 0
        self.connections = None

    @contextlib.contextmanager
    def head(self) -> Iterator[BinaryIO]:
        if urllib.parse.urlsplit(self.location).scheme in ("http", "https") and \
                self.source.connections is None:
            from .http import Connections  # only here, as in ArtifactSource.open

            self.connections = Connections(self.source.verify)
        try:
            with self._open(0, self.HEAD_PROBE) as stream:
                self.size, self.etag = stream.size, stream.etag
                self.fetched += min(self.HEAD_PROBE, stream.size)
                yield stream
        finally:
            if self.connections is not None:
                self.connections.close()

    def open(self, start: int, end: int):
        self.fetched += end - start
        return self._open(start, end, self.etag)

    def _open(self, start: int, end: int, etag: str | None = None):
        first = f"download: resumed at byte {start} "  # not news: the range starts there

        def log(message: str) -> None:
            if not message.startswith(first):
                self.log(message)

        return self.source.open(self.location, log=log, check=self.check, start=start,
                                end=end, etag=etag, connections=self.connections)
