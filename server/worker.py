"""The gunicorn worker of `tern-server serve`: gunicorn's `gthread` worker with a front that
reads whole requests before a thread is spent on them.

gthread hands each new or keep-alive connection to a thread as soon as one byte arrives, and
the thread then blocks on the TLS handshake, the headers and the body: a few dozen clients
trickling a byte a second hold every thread and the server stops answering. Here the
worker's event loop (one thread, non-blocking sockets) does the handshake, reads the
headers and a body of up to `BUFFERED_BODY_BYTES`, and only then hands the connection to a
thread; a trickling client costs a selector entry and its buffer, not a thread. Deadlines
bound what the front keeps (`HEADER_SECONDS`; bodies at `MIN_BODY_RATE` in every
window). A larger body (an artifact upload) is streamed by the thread as before, under the
same minimum-rate rule, so a stalled upload frees its thread within seconds.

A server-sent events stream (`/events/stream`, a deployment page) holds its thread for its
whole life: `server.events.service` bounds how many a process serves at once (EVENT_STREAMS,
all threads but one by default) and for how long (EVENT_STREAM_SECONDS), so streams never take
every thread from the devices' requests.
"""
import errno
import re
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field
from functools import partial

from gunicorn import sock as gunicorn_sock
from gunicorn.http import RequestParser
from gunicorn.workers.gthread import TConn, ThreadWorker

HEADER_SECONDS = 10.0  # TLS handshake and request headers, from the connection or its wake-up
MIN_BODY_RATE = 1024  # bytes/s, over each BODY_WINDOW_SECONDS of a body
BODY_WINDOW_SECONDS = 10.0
BUFFERED_BODY_BYTES = 1 << 20  # Mender's API payload limit; larger bodies are streamed
RECV_BYTES = 1 << 16
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class BodyPace:
    """The minimum-rate rule for request bodies: each window of BODY_WINDOW_SECONDS must bring
    MIN_BODY_RATE x BODY_WINDOW_SECONDS bytes. A window starts when the last one was filled,
    so a fast start earns no credit for stalling later (an average over the whole body
    would let a 100 MiB upload stall for a day)."""
    window_start: float
    window_received: int = 0  # bytes of the body received when the window started

    def update(self, received: int, now: float) -> None:
        if received - self.window_received >= MIN_BODY_RATE * BODY_WINDOW_SECONDS:
            self.window_start, self.window_received = now, received

    @property
    def deadline(self) -> float:
        return self.window_start + BODY_WINDOW_SECONDS


@dataclass
class Head:
    """What the front needs from a request's headers."""
    end: int  # offset of the body in the buffer
    content_length: int = 0
    chunked: bool = False
    expects_continue: bool = False


FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|expect)[ \t]*:[ \t]*([^\r]*)",
                     re.IGNORECASE)


def parse_head(data: bytes | bytearray, end: int) -> Head:
    """Framing headers of the request whose header block ends at `end` (before b"\\r\\n\\r\\n").

    Malformed values are left for gunicorn's parser to answer: the front only decides when
    the request is complete."""
    head = Head(end=end + 4)
    for name, value in FRAMING.findall(data, 0, end):
        name, value = name.lower(), value.strip().lower()
        if name == b"content-length" and value.isdigit():
            head.content_length = int(value)
        elif name == b"transfer-encoding":
            head.chunked = value.endswith(b"chunked")
        elif value == b"100-continue":
            request_line_end = data.find(b"\r\n")
            head.expects_continue = data[request_line_end - 8:request_line_end] == b"HTTP/1.1"
    return head


def without_expect(data: bytes | bytearray, body: int) -> bytes:
    """The header block of `data` (the body starts at `body`) without its Expect header."""
    request_line, *lines = bytes(data[:body - 4]).split(b"\r\n")
    kept = [line for line in lines if line.partition(b":")[0].strip().lower() != b"expect"]
    return b"\r\n".join([request_line, *kept]) + b"\r\n\r\n"


def chunked_complete(data: bytes | bytearray, pos: int) -> bool:
    """Whether a chunked body starting at `pos` has arrived up to its last chunk and trailers
    (or is malformed, which the parser answers)."""
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return False
        try:
            size = int(bytes(data[pos:eol]).split(b";", 1)[0], 16)
        except ValueError:
            return True
        if size == 0:
            return data.find(b"\r\n\r\n", eol) >= 0 or data.startswith(b"\r\n", eol + 2)
        pos = eol + 2 + size + 2
        if pos > len(data):
            return False


class MinRateSocket:
    """The socket as the request parser reads it in a thread: the body must keep up the
    minimum rate (`BodyPace`, carried on from the front).

    The pace is checked after each read, and a read waits at most one window, so a body
    that falls behind ends within one to two windows. (Setting the socket's timeout to the
    pace's deadline before each read cost two more system calls a read: a tenth more time
    to read a 300 MiB upload on loopback.) The socket stays in timeout mode for the rest of
    the request: only uploads read past the front, and they answer a small JSON."""

    def __init__(self, sock: socket.socket, pace: BodyPace, received: int):
        self._sock, self._pace, self._received = sock, pace, received
        self._timed = False

    def recv(self, size: int) -> bytes:
        if not self._timed:
            self._sock.settimeout(BODY_WINDOW_SECONDS)
            self._timed = True
        try:
            data = self._sock.recv(size)
        except TimeoutError:
            data = None
        now = time.monotonic()
        if data is not None:
            self._received += len(data)
            self._pace.update(self._received, now)
        if data is None or now > self._pace.deadline:
            raise ConnectionResetError(errno.ECONNRESET, "request body below the minimum rate")
        return data


@dataclass(eq=False)
class Front:
    """A connection whose request the front is still reading."""
    conn: TConn
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    handshaken: bool = False
    head: Head | None = None
    pace: BodyPace | None = None
    waiting_for: int = 0  # the selector events it is registered for, 0 when not registered


class FrontThreadWorker(ThreadWorker):
    """gthread with the front described above. Also closes its listeners as soon as it starts
    shutting down (after accepting what is already queued), so that on a restart or `HUP`
    the kernel sends new connections to the other workers' listeners instead of leaving them
    in the backlog of a worker that no longer accepts."""

    def init_process(self):
        self.fronts: dict[TConn, Front] = {}
        self.next_sweep = 0.0  # of the fronts past their deadline
        self.ssl_context = gunicorn_sock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        # The longest header block gunicorn's parser accepts; past it, the parser answers.
        self.max_head = (self.cfg.limit_request_line + 2 + self.cfg.limit_request_fields
                         * (self.cfg.limit_request_field_size + 2) + 2)
        super().init_process()

    def accept(self, listener):
        try:
            self.take(listener)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise

    def take(self, listener) -> None:
        """Accept one connection from `listener` into the front."""
        client, addr = listener.accept()
        self.nr_conns += 1
        conn = TConn(self.cfg, client, addr, listener.getsockname())  # non-blocking
        if self.ssl_context is not None:
            conn.sock = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
        self.start_front(conn, handshaken=self.ssl_context is None)

    def on_client_socket_readable(self, conn, client):
        """A keep-alive connection's next request: through the front too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.start_front(conn, handshaken=True, buffered=conn.parser.unreader.take_buffered())

    def start_front(self, conn: TConn, handshaken: bool, buffered: bytes = b"") -> None:
        front = Front(conn, time.monotonic() + HEADER_SECONDS, bytearray(buffered), handshaken)
        self.fronts[conn] = front
        self.on_front_event(front, conn.sock)  # often the whole request is there already

    def on_front_event(self, front: Front, _sock) -> None:
        sock = front.conn.sock
        try:
            if not front.handshaken:
                sock.do_handshake()
                front.handshaken = True
            while not self.complete(front):
                data = sock.recv(RECV_BYTES)
                if not data:
                    return self.close_front(front)
                front.buffer += data
        except ssl.SSLWantReadError:
            return self.wait_front(front, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            return self.wait_front(front, selectors.EVENT_WRITE)
        except BlockingIOError:
            return self.wait_front(front, selectors.EVENT_READ)
        except OSError:  # ssl.SSLError too: a failed handshake, a reset
            return self.close_front(front)
        self.hand_over(front)

    def complete(self, front: Front) -> bool:
        """Whether the request is in the buffer (or as much of it as the front keeps)."""
        buffer = front.buffer
        if front.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return len(buffer) > self.max_head
            front.head = parse_head(buffer, end)
            front.pace = BodyPace(time.monotonic())
            if front.head.expects_continue and (front.head.content_length or front.head.chunked):
                self.answer_continue(front)
        head, received = front.head, len(buffer) - front.head.end
        if received >= BUFFERED_BODY_BYTES:
            return True
        front.pace.update(received, time.monotonic())
        front.deadline = front.pace.deadline
        if head.chunked:
            return chunked_complete(buffer, head.end)
        return received >= head.content_length

    def answer_continue(self, front: Front) -> None:
        """Answer `Expect: 100-continue` here, or the client waits before sending the body the
        front waits for; the header is dropped so that gunicorn does not answer it again."""
        head = without_expect(front.buffer, front.head.end)
        front.buffer[:front.head.end] = head
        front.head.end = len(head)
        front.conn.sock.send(CONTINUE)  # a fresh connection's send buffer has room

    def wait_front(self, front: Front, events: int) -> None:
        if not front.waiting_for:
            self.poller.register(front.conn.sock, events, partial(self.on_front_event, front))
        elif front.waiting_for != events:
            self.poller.modify(front.conn.sock, events, partial(self.on_front_event, front))
        front.waiting_for = events

    def leave_front(self, front: Front) -> None:
        del self.fronts[front.conn]
        if front.waiting_for:
            self.poller.unregister(front.conn.sock)

    def close_front(self, front: Front) -> None:
        self.leave_front(front)
        self.nr_conns -= 1
        front.conn.close()

    def hand_over(self, front: Front) -> None:
        """The request is read: a thread takes the connection, with the buffer in its parser."""
        conn = front.conn
        self.leave_front(front)
        if front.head is None:  # headers past gunicorn's limits: its parser answers
            pace, received = BodyPace(time.monotonic()), 0
        else:
            pace, received = front.pace, len(front.buffer) - front.head.end
        conn.parser = RequestParser(self.cfg, MinRateSocket(conn.sock, pace, received),
                                    conn.client)
        conn.parser.unreader.unread(bytes(front.buffer))
        conn.initialized = conn.data_ready = True
        self.enqueue_req(conn)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + 0.5
        for front in [front for front in self.fronts.values() if front.deadline < now]:
            self.close_front(front)

    def set_accept_enabled(self, enabled):
        super().set_accept_enabled(enabled)
        if not self.alive and self.sockets:  # run() stops accepting: shutting down
            self.close_listeners()

    def close_listeners(self) -> None:
        """Accept what the listeners already queued, then close them (see the class)."""
        for listener in self.sockets:
            listener.setblocking(False)
            while True:
                try:
                    self.take(listener)
                except BlockingIOError:
                    break
                except ConnectionAbortedError:
                    continue
            listener.close()
        self.sockets = []
