"""ResumableDownload against a local HTTP server through the fault-injecting proxy: the
bytes that come out are the file's, whatever happens to the connection."""
import os
import threading
import time

import pytest
from werkzeug.serving import make_server
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from testkit.faultproxy import FaultProxy
from updater.download import DownloadError, ResumableDownload

DATA = os.urandom(3 << 20)


class Origin:
    """A file over HTTP; `honour_range=False` makes it answer 200 to Range requests."""

    def __init__(self):
        self.honour_range = True
        self.answers: list[tuple[str | None, int]] = []  # (Range header, status)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self.server.server_port

    @Request.application
    def app(self, request: Request) -> Response:
        import io

        if not self.honour_range:
            response = Response(DATA, mimetype="application/octet-stream")
        else:
            response = send_file(io.BytesIO(DATA), request.environ, conditional=True,
                                 mimetype="application/octet-stream", etag="v1")
        self.answers.append((request.headers.get("Range"), response.status_code))
        return response


@pytest.fixture
def origin():
    origin = Origin()
    thread = threading.Thread(target=origin.server.serve_forever, daemon=True)
    thread.start()
    yield origin
    origin.server.shutdown()


@pytest.fixture
def proxy(origin):
    proxy = FaultProxy(origin.port).start()
    yield proxy
    proxy.stop()


def download(proxy, **options) -> ResumableDownload:
    settings = {"retries": 3, "timeout": 5.0, "deadline": 30.0, "max_backoff": 0.05,
                **options}
    return ResumableDownload(f"http://127.0.0.1:{proxy.port}/artifact", **settings)


def read_all(stream, chunk: int = 100_000) -> bytes:
    parts = []
    while data := stream.read(chunk):
        parts.append(data)
    return b"".join(parts)


def test_passes_through_untouched(proxy, origin):
    with download(proxy) as stream:
        assert read_all(stream) == DATA
        assert stream.resumed == 0
    assert origin.answers == [(None, 200)]


def test_resets_resume_with_range_requests(proxy, origin):
    proxy.reset_after(1_000_000, times=2)  # the second hits the first resumed answer
    lines = []
    with download(proxy, log=lines.append) as stream:
        assert read_all(stream) == DATA
        assert stream.resumed == 2
    assert proxy.faults_done == 2
    ranges = [(header, status) for header, status in origin.answers if header]
    assert len(ranges) == 2 and all(status == 206 for _, status in ranges)
    assert ranges[0][0].startswith("bytes=") and ranges[0][0].endswith("-")
    assert any(line.startswith("download interrupted at byte") for line in lines)
    assert any(line.startswith("download: resumed at byte") for line in lines)


def test_a_stall_is_detected_by_the_read_timeout_and_resumed(proxy):
    proxy.stall_after(1_500_000)
    started = time.monotonic()
    with download(proxy, timeout=0.5) as stream:
        assert read_all(stream) == DATA
        assert stream.resumed == 1
    assert time.monotonic() - started < 10


def test_a_server_that_ignores_range_fails_cleanly(proxy, origin):
    # A stall rather than a reset: a reset may drop what the client has not read yet, even
    # all of it, and a download broken at byte 0 rightly starts again without Range.
    origin.honour_range = False
    proxy.stall_after(1_000_000)
    with download(proxy, timeout=0.5) as stream:
        received = stream.read(900_000)
        with pytest.raises(DownloadError, match="cannot resume at byte .*answered 200"):
            while stream.read(100_000):
                pass
    assert DATA.startswith(received)


def test_a_stopped_server_fails_at_the_deadline(proxy):
    proxy.stall_after(1_000_000)  # nothing more in flight when the server stops
    with download(proxy, retries=1000, deadline=2.0, max_backoff=0.2) as stream:
        stream.read(100_000)
        proxy.refuse()
        started = time.monotonic()
        with pytest.raises(DownloadError, match="download deadline of 2 s passed at byte"):
            read_all(stream)
    assert time.monotonic() - started < 3


def test_retries_are_bounded(proxy):
    proxy.refuse()
    with pytest.raises(DownloadError, match="connecting: .*; 2 retries without progress"):
        download(proxy, retries=2)


def test_a_server_back_in_time_lets_the_download_finish(proxy):
    lines = []
    proxy.stall_after(1_000_000)
    with download(proxy, retries=1000, max_backoff=0.1, log=lines.append) as stream:
        head = stream.read(500_000)
        proxy.refuse()
        threading.Timer(1.0, proxy.passing).start()
        assert head + read_all(stream) == DATA
    assert sum("download interrupted" in line for line in lines) >= 2


def test_check_ends_the_download(proxy):
    class Aborted(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise Aborted()

    with download(proxy, check=check) as stream, pytest.raises(Aborted):
        read_all(stream)


def test_a_range_from_a_start_to_an_end(proxy, origin):
    """After a power cut: the head alone, then the rest from a checkpoint, with the ETag."""
    with download(proxy, end=5000) as stream:
        assert read_all(stream) == DATA[:5000]
        assert (stream.size, stream.etag) == (len(DATA), '"v1"')
    with download(proxy, start=2 << 20, etag='"v1"') as stream:
        assert read_all(stream) == DATA[2 << 20:]
    assert [header for header, _ in origin.answers] == ["bytes=0-4999", f"bytes={2 << 20}-"]
    assert [status for _, status in origin.answers] == [206, 206]


def test_a_changed_artifact_is_not_resumed(proxy):
    """If-Range with another ETag: the server sends the whole (new) file, which is refused."""
    with pytest.raises(DownloadError, match="the artifact changed"):
        download(proxy, start=1000, etag='"v0"')
