"""The front of serve's worker: when a request is complete, and the body rate rule."""
from server.worker import (
    BODY_WINDOW_SECONDS,
    MIN_BODY_RATE,
    BodyPace,
    chunked_complete,
    parse_head,
    without_expect,
)


def head_of(request: bytes):
    return parse_head(request, request.find(b"\r\n\r\n"))


def test_parse_head_finds_the_framing_headers_in_any_case():
    request = (b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-LENGTH:  12 \r\n"
               b"Expect: 100-Continue\r\n\r\n{}")
    head = head_of(request)
    assert (head.end, head.content_length, head.chunked, head.expects_continue) == \
        (len(request) - 2, 12, False, True)
    assert head_of(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").chunked
    assert not head_of(b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue
    assert head_of(b"GET / HTTP/1.1\r\nX-Content-Length: 5\r\n\r\n").content_length == 0
    assert head_of(b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n").content_length == 0


def test_chunked_complete_waits_for_the_last_chunk_and_trailers():
    body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n"
    assert not chunked_complete(body, 0)
    assert chunked_complete(body + b"\r\n", 0)
    assert not chunked_complete(body + b"Trailer: 1\r\n", 0)
    assert chunked_complete(body + b"Trailer: 1\r\n\r\n", 0)
    assert not chunked_complete(b"5\r\nhel", 0)
    assert chunked_complete(b"zz\r\n", 0)  # malformed: the parser answers it


def test_body_pace_gives_no_credit_for_a_fast_start():
    pace = BodyPace(window_start=100.0)
    assert pace.deadline == 100.0 + BODY_WINDOW_SECONDS
    pace.update(MIN_BODY_RATE * BODY_WINDOW_SECONDS - 1, now=105.0)
    assert pace.deadline == 100.0 + BODY_WINDOW_SECONDS  # one byte short of the window
    pace.update(100 * MIN_BODY_RATE * BODY_WINDOW_SECONDS, now=106.0)  # a fast megabyte
    assert pace.deadline == 106.0 + BODY_WINDOW_SECONDS  # a new window, not 100 windows


def test_without_expect_keeps_the_other_headers_and_the_body_offset_right():
    request = b"POST /x HTTP/1.1\r\nA: 1\r\nExpect: 100-continue\r\nB: 2\r\n\r\nbody"
    assert without_expect(request, len(request) - 4) == \
        b"POST /x HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"
