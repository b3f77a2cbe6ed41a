"""Test tooling: what the tests, benchmarks, the demo and the power-cut campaign share to run
Tern for real (a live server, a PostgreSQL cluster, an operator, simulated devices, a fault
proxy, enrolment of an emulated device). It may import any package of ours; no production
package imports it.

Here: `wait_for` (poll until true), `terminate` (stop a server process, killing it if it
lingers) and `free_port` (a free loopback port, qemu's).
"""
import subprocess
import time

from qemu.device import free_port

__all__ = ["free_port", "terminate", "wait_for"]


def wait_for(condition, timeout: float = 90, interval: float = 0.5, what: str = "condition"):
    """Poll `condition` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def terminate(process: subprocess.Popen | None, grace: float = 15) -> None:
    """SIGTERM a process still running, then SIGKILL it if it is not gone within `grace`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
