"""The module boundaries of DESIGN.md, checked on the source: imports point down, never up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "generation", "storage")
HEAVY = {"torch", "diffusers", "transformers", "accelerate", "xformers"}


def imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports (relative imports resolved to our packages)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(path.relative_to(ROOT).parts[0] if node.level else node.module.split(".")[0])
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("storage"), ids=str)
def test_storage_imports_no_layer_above_and_no_torch(path: Path) -> None:
    assert not imports(path) & ({"bot", "generation", "discord", "telegram"} | HEAVY)


@pytest.mark.parametrize("path", sources("generation"), ids=str)
def test_generation_knows_nothing_of_the_bot_or_platforms(path: Path) -> None:
    assert not imports(path) & {"bot", "discord", "telegram"}


@pytest.mark.parametrize("path", sources("bot"), ids=str)
def test_only_generation_imports_torch(path: Path) -> None:
    assert not imports(path) & HEAVY


@pytest.mark.parametrize("path", sources("bot"), ids=str)
def test_only_the_platform_modules_import_their_platform(path: Path) -> None:
    found = imports(path)
    assert "discord" not in found or (path.parent.name == "frontends" and path.stem.startswith("discord"))
    assert "telegram" not in found or (path.parent.name == "frontends" and path.stem.startswith("telegram"))


def test_the_command_grammar_loads_without_torch_or_any_platform() -> None:
    code = "import sys, bot.commands, bot.service; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = set(ast.literal_eval(loaded.stdout))
    assert "bot" in modules
    assert not modules & (HEAVY | {"discord", "telegram"})
