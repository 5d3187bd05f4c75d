"""Scope lives in the metrics layer (apps/metrics/scope.py) and apps/accounts/access.py
builds it: accounts and metrics must never import each other in a cycle at module level.

Two checks: the module-level import graph of apps/ (read with ast, imports inside
functions and under TYPE_CHECKING left out, as Python runs them) has no cycle through an
accounts or metrics module; and each side, imported first in a fresh interpreter after
django.setup(), loads (a real cycle fails one of the two orders with "partially
initialized module")."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "apps"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _known_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in APPS.rglob("*.py") if "migrations" not in path.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The apps modules `path` imports when it is itself imported (each with its packages)."""
    found: set[str] = set()

    def add(name: str) -> None:
        while name:
            if name in known:
                found.add(name)
            name = name.rpartition(".")[0]

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                add(node.module)
                for alias in node.names:
                    add(f"{node.module}.{alias.name}")  # `from apps.metrics import days`
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(ast.parse(path.read_text()).body)
    found.discard(module)
    return found


def _cycles_through(known: dict[str, Path], prefixes: tuple[str, ...]) -> list[list[str]]:
    graph = {name: _module_level_imports(name, path, known) for name, path in known.items()}
    cycles: list[list[str]] = []
    # Depth-first search from each accounts/metrics module for a path back to itself.
    for start in sorted(name for name in graph if name.startswith(prefixes)):
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            name, path = stack.pop()
            for target in graph.get(name, ()):
                if target == start:
                    cycles.append([*path, start])
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    return cycles


def test_no_module_level_import_cycle_through_accounts_or_metrics() -> None:
    cycles = _cycles_through(_known_modules(), ("apps.accounts", "apps.metrics"))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The check itself can fail: two modules importing each other at module level."""
    known = {"apps.a": tmp_path / "a.py", "apps.b": tmp_path / "b.py"}
    known["apps.a"].write_text("from apps.b import thing\n")
    known["apps.b"].write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import apps.a\n")
    assert _cycles_through(known, ("apps.a",)) == []  # under TYPE_CHECKING: not run, no cycle
    known["apps.b"].write_text("def later():\n    import apps.a\n\nimport apps.a\n")
    assert _cycles_through(known, ("apps.a",)) == [["apps.a", "apps.b", "apps.a"]]


def test_scope_needs_neither_django_nor_accounts() -> None:
    code = (
        "import sys, apps.metrics.scope; "
        "print(sorted(m for m in sys.modules if m.startswith(('apps.accounts', 'django'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("first", ["apps.accounts.access", "apps.metrics.query", "apps.metrics.scope"])
def test_each_side_imports_first_in_a_fresh_interpreter(first: str) -> None:
    code = (
        f"import django; django.setup(); import {first}; "
        "import apps.accounts.access, apps.metrics.query, apps.metrics.request; "
        "assert apps.accounts.access.Scope is apps.metrics.query.Scope"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "observatory.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
