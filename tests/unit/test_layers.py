"""Imports point down: the domain, the store, the services and notify never reach up.

Layers, bottom up: the domain; the store; the services and notify (peers); then the entry
points (`chalicelib.api`, `chalicelib.dashboard`, `app`). The executors are run by the
services, so the store and the domain must not know them either. Imports are read with
`ast`, so one inside a function counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = ("chalicelib.api", "chalicelib.dashboard", "app")
#: what each layer must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": (*ENTRY_POINTS, "chalicelib.services", "chalicelib.notify", "chalicelib.store", "chalicelib.executors"),
    "store": (*ENTRY_POINTS, "chalicelib.services", "chalicelib.notify", "chalicelib.executors"),
    "services": ENTRY_POINTS,
    "notify": ENTRY_POINTS,
}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of every import; `from chalicelib import api` names `chalicelib.api`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted((ROOT / "chalicelib" / layer).rglob("*.py")):
        for line, module in imported_modules(ast.parse(path.read_text(), str(path))):
            if any(module == banned or module.startswith(banned + ".") for banned in FORBIDDEN[layer]):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_of_the_layer_imports_a_layer_above_it(layer: str) -> None:
    assert violations(layer) == []


def test_the_check_sees_every_form_of_import() -> None:
    tree = ast.parse("import chalicelib.api.http\nfrom chalicelib import api\ndef f():\n    from app import app\n")
    assert sorted(module for _, module in imported_modules(tree)) == [
        "app", "app.app", "chalicelib", "chalicelib.api", "chalicelib.api.http",
    ]
