"""Integration tests: emulated devices come from the qemu harness's fixtures."""
pytest_plugins = ["qemu.pytest_plugin"]
