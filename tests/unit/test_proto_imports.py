"""rdpbalancer.proto stays sans-IO: standard library only, and none of its I/O,
concurrency, clock or randomness modules (STYLE.md, "Dependency direction")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PROTO = Path(__file__).resolve().parents[2] / "rdpbalancer" / "proto"
FORBIDDEN = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "multiprocessing",
    "subprocess",
    "os",
    "io",
    "time",
    "random",
    "secrets",
    "logging",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PROTO.glob("*.py")), ids=lambda p: p.name)
def test_proto_imports_only_pure_stdlib(path: Path) -> None:
    modules = imported_modules(path) - {"__future__"}
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)
    assert not modules & FORBIDDEN
