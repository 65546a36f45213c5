"""The bank package's layers: the core imports no adapter, and no import goes round in a
circle among the services (read from the source, so a lazy or ``TYPE_CHECKING`` import
counts too); each module also imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import socklab.services

SERVICES = Path(socklab.services.__file__).parent
ADAPTERS = {
    "socklab.services.bank.session",
    "socklab.services.bank.line",
    "socklab.services.bank.lab",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVICES.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SERVICES.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every socklab module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES}


def test_the_core_imports_no_adapter() -> None:
    assert imports_of(MODULES["socklab.services.bank.core"]) & ADAPTERS == set()


def test_no_import_circle_among_the_services() -> None:
    graph = {name: imports_of(path) - {name} for name, path in MODULES.items()}
    # A package's __init__ may gather its own modules; that is not a circle.
    for name in graph:
        graph[name] = {dep for dep in graph[name] if not name.startswith(dep + ".")}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError(
                "import circle: " + " -> ".join([*trail[trail.index(name) :], name])
            )
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if n.startswith("socklab.services.bank"))
)
def test_each_bank_module_imports_alone(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
