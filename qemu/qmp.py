"""A minimal synchronous QMP client: power control for one QEMU."""
import json
import socket


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, sock: socket.socket, timeout: float = 10.0):
        self._sock = sock
        self._sock.settimeout(timeout)
        self._reader = self._sock.makefile("r", encoding="utf-8")
        self.events: list[dict] = []  # asynchronous events (e.g. WATCHDOG), read with replies
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self._reader.readline()
            if not line:
                raise QMPError("QMP connection closed")
            message = json.loads(line)
            if "event" not in message:
                return message
            self.events.append(message)

    def execute(self, command: str, **arguments) -> dict:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        reply = self._read()
        if "error" in reply:
            raise QMPError(f"{command}: {reply['error']}")
        return reply.get("return", {})

    def wait_event(self, name: str, **data) -> dict:
        """The first event `name` whose data has `data`, read already or waited for (up to
        the socket's timeout)."""
        while True:
            for event in self.events:
                if event["event"] == name and data.items() <= event.get("data", {}).items():
                    self.events.remove(event)
                    return event
            line = self._reader.readline()
            if not line:
                raise QMPError("QMP connection closed")
            self.events.append(json.loads(line))

    def close(self) -> None:
        self._reader.close()
        self._sock.close()
