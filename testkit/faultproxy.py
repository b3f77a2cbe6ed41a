"""For tests: a TCP proxy on 127.0.0.1 that injects network faults between a client and a
server (HTTPS passes through untouched; the faults cut the encrypted stream).

Modes: `passing()` forwards everything; `refuse()` is a stopped server (open connections
reset, new ones refused); `reset_after(n)` and `stall_after(n)` let `n` bytes of a
connection's answer through, then reset the connection or stop forwarding while keeping
it open, for the next `times` connections that get that far. Answers shorter than `n`
(API calls) pass, so a fault lands in the one long answer, the download. `answer_bytes`
counts what the server's answers passed in all. `forward_to(port)` sends the connections
opened from then on to another server (e.g. one behind a proxy that ignores Range).
"""
import contextlib
import socket
import struct
import threading

CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = 0
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.fault: str | None = None  # "reset" | "stall"
        self.fault_after = 0
        self.faults_left = 0
        self.faults_done = 0
        self.connections: set[Connection] = set()
        self.connection_count = 0
        self.answer_bytes = 0  # every byte of every answer passed to a client

    def start(self) -> "FaultProxy":
        self._listen()
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def passing(self) -> None:
        with self.lock:
            self.fault = None
        if self.listener is None:
            self._listen()

    def reset_after(self, count: int, times: int = 1) -> None:
        self._arm("reset", count, times)

    def stall_after(self, count: int, times: int = 1) -> None:
        self._arm("stall", count, times)

    def forward_to(self, port: int, host: str = "127.0.0.1") -> None:
        """New connections go to host:port from now on; open ones stay where they are."""
        self.target = (host, port)

    def refuse(self) -> None:
        """As a stopped server: the port refuses connections, open ones are reset."""
        self._close_listener()
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            connection.close(reset=True)

    def stop(self) -> None:
        self.refuse()

    # -- internals ------------------------------------------------------------------------

    def _arm(self, fault: str, count: int, times: int) -> None:
        with self.lock:
            self.fault, self.fault_after, self.faults_left = fault, count, times

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: refusing
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                Connection.reset(client)
                continue
            connection = Connection(self, client, upstream)
            with self.lock:
                self.connections.add(connection)
                self.connection_count += 1
            connection.start()

    def fault_for(self, sent: int, incoming: int) -> tuple[str, int] | None:
        """The fault that hits a connection about to pass `sent + incoming` answer bytes:
        (kind, bytes still to let through), taken from the armed ones; or None."""
        with self.lock:
            if self.fault and self.faults_left and sent + incoming > self.fault_after:
                self.faults_left -= 1
                self.faults_done += 1
                return self.fault, max(0, self.fault_after - sent)
        return None


class Connection:
    """One client connection and its upstream; two pumps, one per direction."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        upstream.settimeout(None)
        self.closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._pump_requests, daemon=True).start()
        threading.Thread(target=self._pump_answers, daemon=True).start()

    def _pump_requests(self) -> None:
        try:
            while data := self.client.recv(CHUNK):
                self.upstream.sendall(data)
        except OSError:
            pass
        self.close()

    def _pump_answers(self) -> None:
        sent = 0
        try:
            while data := self.upstream.recv(CHUNK):
                fault = self.proxy.fault_for(sent, len(data))
                if fault:
                    kind, allowed = fault
                    self.client.sendall(data[:allowed])
                    if kind == "reset":
                        self.close(reset=True)
                    else:
                        self.closed.wait()  # stalled until the client gives up
                    return
                self.client.sendall(data)
                sent += len(data)
                with self.proxy.lock:
                    self.proxy.answer_bytes += len(data)
        except OSError:
            pass
        self.close()

    def close(self, reset: bool = False) -> None:
        with self.proxy.lock:
            if self.closed.is_set():
                return
            self.closed.set()
            self.proxy.connections.discard(self)
        if reset:
            Connection.reset(self.client)
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @staticmethod
    def reset(sock: socket.socket) -> None:
        """Close with a TCP RST (linger 0), as a crashed peer or a middlebox does."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)  # wakes our other pump's recv(), sends nothing
        sock.close()  # the last reference: the RST goes out now
