"""One version everywhere: `tern-updater --version`, the Python project and the Debian package."""
import re
import tomllib
from pathlib import Path

import updater

ROOT = Path(__file__).parents[3]


def test_the_agent_the_project_and_the_debian_package_have_one_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = re.match(r"tern-updater \((\S+)\)", (ROOT / "debian/changelog").read_text())
    assert updater.__version__ == project == changelog.group(1)
