"""Suite-wide rules.

In CI (CI=true) a skipped test fails the run: everything a test needs is
installed and started by .ci/run, so a skip there means something is missing.
"""
import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; a skip counts as a failure here",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
