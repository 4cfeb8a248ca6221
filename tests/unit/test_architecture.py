"""The dependency direction of STYLE.md, checked on the source: the pure core stays pure."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rdpbalancer"
FORBIDDEN_IN_POLICY = {"asyncio", "pydantic", "sqlite3", "redis", "ldap3", "prometheus_client", "socket", "time",
                       "rdpbalancer.relay", "rdpbalancer.store", "rdpbalancer.config", "rdpbalancer.app"}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (type-only imports create no dependency)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offending(path: Path, forbidden: set[str]) -> set[str]:
    return {m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden)}


@pytest.mark.parametrize("path", sorted((PACKAGE / "policy").glob("*.py")), ids=lambda p: p.name)
def test_policy_is_pure(path: Path) -> None:
    assert not offending(path, FORBIDDEN_IN_POLICY)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_imports_the_composition_root(path: Path) -> None:
    if path.name in {"cli.py", "__main__.py", "demo.py"}:  # entry points compose the whole balancer
        return
    assert not offending(path, {"rdpbalancer.app", "rdpbalancer.cli"})


@pytest.mark.parametrize("path", sorted((PACKAGE / "store").glob("*.py")), ids=lambda p: p.name)
def test_adapters_do_not_reach_into_the_shell(path: Path) -> None:
    assert not offending(path, {"rdpbalancer.relay", "rdpbalancer.app", "rdpbalancer.config"})


def test_ctl_imports_only_the_standard_library() -> None:
    """`rdpbalancer ctl` runs on admin workstations: importing it loads no third-party package
    and nothing of the balancer but itself, the package's version and `runtime`."""
    code = "import sys, rdpbalancer.ctl, json; print(json.dumps(sorted(sys.modules)))"
    # -S: no site-packages at all, so a third-party import fails outright; the tree via PYTHONPATH
    out = subprocess.run([sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    loaded = json.loads(out.stdout)
    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"rdpbalancer", "__main__"}
    assert not third_party, f"rdpbalancer.ctl loads {sorted(third_party)}"
    ours = {m for m in loaded if m.startswith("rdpbalancer.") and not m.startswith("rdpbalancer.ctl")}
    assert ours <= {"rdpbalancer.runtime"}, ours
