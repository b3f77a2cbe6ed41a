"""Test tooling: what the tests, benchmarks, the demo and the power-cut campaign share to run
Tern for real (a live server, a PostgreSQL cluster, an operator, simulated devices, a fault
proxy, enrolment of an emulated device). It may import any package of ours; no production
package imports it.

Here: `wait_for` (poll until true) and `free_port` (a free loopback port, qemu's).
"""
import time

from qemu.device import free_port

__all__ = ["free_port", "wait_for"]


def wait_for(condition, timeout: float = 90, interval: float = 0.5, what: str = "condition"):
    """Poll `condition` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
