"""The ledger's layout: shared rules in ``base`` and ``core``, each backend on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import socklab.ledger

LEDGER = Path(socklab.ledger.__file__).parent
BACKENDS = {
    "sqlite": {"sqlite", "sqlite_store"},
    "postgres": {"postgres", "postgres_store"},
}
"""Backend -> its modules in ``socklab.ledger``."""


def ledger_imports(module: str) -> set[str]:
    """The ``socklab.ledger`` modules that ``module`` imports (at any depth of its code)."""
    tree = ast.parse((LEDGER / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["socklab", "ledger"] and len(parts) > 2:
                found.add(parts[2])
    return found


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_no_backend_imports_another_backends_module(backend: str) -> None:
    others = set().union(*(mods for name, mods in BACKENDS.items() if name != backend))
    for module in sorted(BACKENDS[backend]):
        assert not ledger_imports(module) & others, module


@pytest.mark.parametrize("module", ["base", "core", "pins"])
def test_the_shared_modules_import_no_backend(module: str) -> None:
    assert not ledger_imports(module) & set().union(*BACKENDS.values())
