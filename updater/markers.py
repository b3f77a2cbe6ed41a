"""Progress lines for power-cut tests, on the console: `tern-state: <State>` once a state is
stored and its step starts, `tern-write: <n>%` every 10 % of a rootfs write, and
`tern-written: <bytes>` after each of its writes (where in the slot a cut landed). An
adaptive install writes only the blocks the slot lacks: its tenths are of those bytes, its
offsets go up by jumps, and a write that passes several tenths announces each.

Only when `console_markers` names a file (the test image's `/dev/console`); quiet otherwise.
A test harness reading the serial console cuts the power at the moment it sees one.
"""
_target = ""


def configure(path: str) -> None:
    global _target
    _target = path


def announce(line: str) -> None:
    if not _target:
        return
    try:
        with open(_target, "a") as out:
            out.write(line + "\n")
    except OSError:
        pass  # a marker never fails an update


def state(name: str) -> None:
    announce(f"tern-state: {name}")


class WriteProgress:
    """Announces each 10 % step of `total` bytes once, as the write passes it, and the
    slot offset written up to after each write."""

    def __init__(self, total: int):
        self.total = total
        self.announced = 0

    def update(self, written: int, offset: int | None = None) -> None:
        """`written` bytes of `total` so far; `offset` (default: `written`) the slot's
        offset the last write ended at."""
        if not _target or not self.total:
            return
        percent = min(written * 100 // self.total, 100) // 10 * 10
        for step in range(self.announced + 10, percent + 1, 10):
            announce(f"tern-write: {step}%")
        self.announced = max(self.announced, percent)
        announce(f"tern-written: {written if offset is None else offset}")
