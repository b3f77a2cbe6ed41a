"""Where Download reads an artifact: a local file, or an HTTP(S) URL streamed through
`ResumableDownload` with the config's retries, timeout and deadline."""
import contextlib
import urllib.parse
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .config import Config


class ArtifactSource:
    """`verify`: as requests' (a CA file for a server with its own certificate); `session`:
    a requests session to download through (the fleet simulator shares one per thread)."""

    def __init__(self, config: Config, verify: bool | str = True, session=None):
        self.config = config
        self.verify = verify
        self.session = session

    @contextlib.contextmanager
    def open(self, location: str, log: Callable[[str], None] = lambda message: None,
             check: Callable[[], None] = lambda: None) -> Iterator[BinaryIO]:
        if urllib.parse.urlsplit(location).scheme not in ("http", "https"):
            with open(location, "rb") as file:
                yield file
            return
        from .download import ResumableDownload  # only here: requests takes a while to import

        with ResumableDownload(location, verify=self.verify,
                               retries=self.config.download_retries,
                               timeout=self.config.download_timeout,
                               deadline=self.config.download_deadline,
                               max_backoff=self.config.retry_interval,
                               log=log, check=check, session=self.session) as download:
            yield download
