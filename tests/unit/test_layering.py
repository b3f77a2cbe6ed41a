"""The import rules of DEVELOPERS.md, checked over the source with `ast`: every import of one
of our packages (at the top or inside a function) points down the layers."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"artifact", "updater", "server", "qemu", "fleet", "testkit", "tests", "bench",
        "scripts", "images"}
# What each production package may import of ours, besides itself.
ALLOWED = {
    "artifact": set(),
    "updater": {"artifact"},
    "server": {"artifact"},
    "qemu": set(),
    "fleet": {"artifact", "updater"},
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str, root: Path = ROOT) -> list[str]:
    allowed = ALLOWED[package] | {package}
    return [f"{path.relative_to(root)}:{line} imports {imported}"
            for path in sorted((root / package).rglob("*.py"))
            for line, imported in sorted(imported_packages(path))
            if imported in OURS and imported not in allowed]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_production_packages_import_only_the_layers_below(package):
    assert violations(package) == []


def test_a_forbidden_import_is_found_even_inside_a_function(tmp_path):
    (tmp_path / "qemu").mkdir()
    (tmp_path / "qemu" / "guest.py").write_text(
        "import re\n\ndef enroll():\n    from testkit import wait_for\n")
    assert violations("qemu", tmp_path) == ["qemu/guest.py:4 imports testkit"]


def test_every_package_of_ours_has_a_rule():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - {"testkit", "bench"} == set(ALLOWED)
