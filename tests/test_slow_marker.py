"""The `slow` marker's lists in tests/conftest.py name tests, modules and fixtures that exist: a renamed test
would otherwise silently fall back into the quick run (`pytest -m "not slow"`) and slow it down."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import SLOW_FIXTURES, SLOW_MODULES, SLOW_TESTS

TESTS = Path(__file__).resolve().parent


def defined() -> dict[str, set[str]]:
    """Test module file name → the functions defined at its top level (tests and fixtures)."""
    names: dict[str, set[str]] = {}
    for path in TESTS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        names.setdefault(path.name, set()).update(functions)
    return names


def test_every_listed_slow_test_module_and_fixture_exists() -> None:
    names = defined()
    missing = [entry for entry in SLOW_TESTS if entry.split("::")[1] not in names.get(entry.split("::")[0], ())]
    assert missing == []
    assert sorted(SLOW_MODULES - names.keys()) == []
    every_function = set().union(*names.values())
    assert sorted(SLOW_FIXTURES - every_function) == []
