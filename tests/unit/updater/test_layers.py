"""The import rules of `updater/`, read from the source: imports point down, never around.

Rooms from the bottom: the top-level modules (config, fail points, downloads, the
update record...), `bootloader/`, `install/`, `agent/`, and `cli.py` on top. A module
imports from its own room or the rooms below, never from `server/`, `qemu/` or `fleet/`,
and no chain of imports leads back to where it started.
"""
import ast
from pathlib import Path

import updater

ROOT = Path(updater.__file__).parent
ROOMS = ["", "bootloader", "install", "agent", "cli"]  # bottom to top; "": top-level modules
FORBIDDEN = ("server", "qemu", "fleet")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module `name` imports (at the top or inside a function), absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return found


def room(name: str) -> int:
    parts = name.split(".")
    if parts == ["updater", "cli"]:
        return ROOMS.index("cli")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in ROOMS):
        return ROOMS.index(parts[1])
    return ROOMS.index("")


def test_imports_point_down():
    known = modules()
    wrong = []
    for name, path in known.items():
        for imported in imports(name, path, known):
            top = imported.split(".")[0]
            if top in FORBIDDEN:
                wrong.append(f"{name} imports {imported}")
            elif top == "updater" and imported != "updater" and room(imported) > room(name):
                wrong.append(f"{name} imports {imported}, a room above it")
    assert wrong == []


def test_no_import_cycles():
    known = modules()
    graph = {name: {i for i in imports(name, path, known) if i in known and i != name}
             for name, path in known.items()}
    cycles = []

    def visit(name: str, chain: list[str]) -> None:
        for imported in sorted(graph[name]):
            if imported in chain:
                cycles.append(" -> ".join([*chain[chain.index(imported):], imported]))
            elif imported not in done:
                visit(imported, [*chain, imported])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == []
