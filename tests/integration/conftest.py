"""Integration tests: emulated devices come from the qemu harness's fixtures.

Imported rather than listed in `pytest_plugins`, which pytest only accepts in the
top-level conftest (a plain `pytest` from the root would refuse this file).
"""
from qemu.pytest_plugin import (  # noqa: F401
    base_image,
    device,
    make_device,
    pytest_runtest_makereport,
    shell,
    uboot,
)
