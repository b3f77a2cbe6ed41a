"""The fixtures attach a device's console log to a failing test's report, and only then."""
pytest_plugins = ["pytester"]

CONFTEST = """
import pytest
from qemu.pytest_plugin import BaseImage, make_device, pytest_runtest_makereport

@pytest.fixture
def base_image(tmp_path):
    (tmp_path / "disk.img").write_bytes(bytes(1 << 20))
    return BaseImage(tmp_path)
"""

TESTS = """
def test_fails(make_device):
    make_device().log_path.write_text("U-Boot said hello")
    assert False

def test_passes(make_device):
    make_device().log_path.write_text("all quiet")
"""


def test_console_log_is_attached_to_failing_tests(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*console log: dut-console.log*", "U-Boot said hello"])
    assert "all quiet" not in result.stdout.str()
