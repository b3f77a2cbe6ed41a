"""Named crash points for power-loss tests.

`TERN_FAILPOINTS` (or the config's `failpoints`) is a comma-separated list of:

    before:<State>        the state is stored, its step has not run
    after:<State>         the step ran, the next state is not stored yet
    payload:<bytes>       a rootfs payload has been written up to that byte offset
    bootenv-torn-write    half of a boot environment copy is written
    store-before-rename:<n>  the n-th state store write since arming is fsynced to its
                          temp file, not yet renamed over the store

A crash is `os._exit`: no cleanup, no `finally`, no flush of Python's buffers. What the
process handed to the kernel survives, as it would on the device's disk after power loss.
"""
import os
import sys

CRASH_EXIT = 99
_armed: set[str] = set()
_counts: dict[str, int] = {}


def arm(spec: str) -> None:
    """Arm the fail points of `spec`; counted ones count from here."""
    _armed.update(name.strip() for name in spec.split(",") if name.strip())
    _counts.clear()


def armed(name: str) -> bool:
    return name in _armed


def crash(name: str) -> None:
    print(f"tern-updater: fail point {name}: crashing", file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT)


def hit(name: str) -> None:
    if name in _armed:
        crash(name)


def hit_nth(name: str) -> None:
    """Count the times `name` is reached; crash when `name:<count>` is armed."""
    _counts[name] = _counts.get(name, 0) + 1
    hit(f"{name}:{_counts[name]}")


def payload_offset() -> int | None:
    """The byte offset of an armed `payload:` fail point."""
    for name in _armed:
        if name.startswith("payload:"):
            return int(name.split(":", 1)[1])
    return None


arm(os.environ.get("TERN_FAILPOINTS", ""))
