"""The dependency contract, checked on the source (imports under `if TYPE_CHECKING:` count: a
type-only edge is still an edge of the design). The pure core stays pure; the shell's packages
depend downwards only; the package graph has no cycle; only the entry points know `app`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rdpbalancer"
SHELL = {"rdpbalancer.relay", "rdpbalancer.store", "rdpbalancer.config", "rdpbalancer.app", "rdpbalancer.admin",
         "rdpbalancer.workers", "rdpbalancer.handoff", "rdpbalancer.health", "rdpbalancer.directory",
         "rdpbalancer.hosts"}
FORBIDDEN_IN_POLICY = {"asyncio", "pydantic", "sqlite3", "redis", "ldap3", "prometheus_client", "socket", "time",
                       "rdpbalancer.relay", "rdpbalancer.store", "rdpbalancer.config", "rdpbalancer.app"}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (type-only imports create no dependency)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def imports(path: Path, *, type_only: bool = True) -> set[str]:
    """Every rdpbalancer or third-party module `path` imports; `type_only=False` leaves out
    what is imported under `if TYPE_CHECKING:` (no run-time dependency)."""
    found: set[str] = set()
    nodes = ast.walk(ast.parse(path.read_text())) if type_only else _runtime_nodes(ast.parse(path.read_text()))
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offending(path: Path, forbidden: set[str]) -> set[str]:
    return {m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden)}


@pytest.mark.parametrize("path", sorted((PACKAGE / "policy").glob("*.py")), ids=lambda p: p.name)
def test_policy_is_pure(path: Path) -> None:
    assert not offending(path, FORBIDDEN_IN_POLICY | SHELL)


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


def unit_of(module: str) -> str:
    """The package (or top-level module) a module belongs to: rdpbalancer.relay.session -> relay."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rdpbalancer"


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        source = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "rdpbalancer"
        for module in imports(path):
            if module.startswith("rdpbalancer.") and unit_of(module) != source:
                graph.setdefault(source, set()).add(unit_of(module))
    return graph


def test_the_package_graph_has_no_cycle() -> None:
    graph, done, cycles = package_graph(), set(), []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    assert not cycles, cycles


# package -> what it must not import, type-only imports included (the layers, bottom up)
LAYERS = {
    "proto": {"rdpbalancer"},  # the standard library only (its own modules excepted below)
    "settings": SHELL - {"rdpbalancer.config"},
    "netaddr": SHELL,
    "tasks": SHELL,
    "ipc": SHELL,
    "config": {"rdpbalancer.relay", "rdpbalancer.store", "rdpbalancer.admin", "rdpbalancer.app",
               "rdpbalancer.workers", "rdpbalancer.handoff", "rdpbalancer.directory"},
    "hosts": {"rdpbalancer.relay", "rdpbalancer.store", "rdpbalancer.config", "rdpbalancer.admin", "rdpbalancer.app",
              "rdpbalancer.workers", "rdpbalancer.handoff", "rdpbalancer.directory"},
    "health": {"rdpbalancer.relay", "rdpbalancer.store", "rdpbalancer.admin", "rdpbalancer.app",
               "rdpbalancer.workers", "rdpbalancer.handoff"},
    "store": {"rdpbalancer.relay", "rdpbalancer.app", "rdpbalancer.config", "rdpbalancer.admin",
              "rdpbalancer.workers", "rdpbalancer.handoff"},
    "relay": {"rdpbalancer.admin", "rdpbalancer.app", "rdpbalancer.handoff", "rdpbalancer.workers",
              "rdpbalancer.operations", "rdpbalancer.cluster", "rdpbalancer.reloader", "rdpbalancer.config",
              "rdpbalancer.ports", "rdpbalancer.view", "rdpbalancer.metrics"},
    "workers": {"rdpbalancer.admin", "rdpbalancer.app", "rdpbalancer.handoff", "rdpbalancer.operations",
                "rdpbalancer.config", "rdpbalancer.ports", "rdpbalancer.view"},
    "admin": {"rdpbalancer.app", "rdpbalancer.handoff", "rdpbalancer.workers", "rdpbalancer.operations",
              "rdpbalancer.cluster", "rdpbalancer.view"},  # readers see ports.ReadModel / OperationsPort
    "metrics": {"rdpbalancer.app", "rdpbalancer.admin", "rdpbalancer.handoff", "rdpbalancer.workers",
                "rdpbalancer.operations", "rdpbalancer.view"},
}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_layer_depends_downwards_only(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    layer = rel.parts[0].removesuffix(".py")
    forbidden = LAYERS.get(layer, set())
    own = f"rdpbalancer.{layer}"
    bad = {m for m in offending(path, forbidden) if m != own and not m.startswith(own + ".")}
    if layer == "proto":
        bad |= {m for m in imports(path) if m.split(".")[0] not in sys.stdlib_module_names
                and not m.startswith("rdpbalancer.proto")}
    assert not bad, f"{rel} imports {sorted(bad)}"


@pytest.mark.parametrize("name", ["machine.py", "vocabulary.py", "facts.py"])
def test_the_session_machine_is_sans_io(name: str) -> None:
    """relay/machine.py decides; the shell (relay/session.py) does. No loop, socket, clock or
    descriptor in the machine or its vocabulary, and nothing of the shell around them (the whole
    closure is checked below, by importing them)."""
    forbidden = {"asyncio", "socket", "time", "os", "select", "selectors", "uvloop", "rdpbalancer.relay.session",
                 "rdpbalancer.relay.control", "rdpbalancer.relay.splice", "rdpbalancer.relay.sockets",
                 "rdpbalancer.relay.context", "rdpbalancer.tasks"}
    assert not offending(PACKAGE / "relay" / name, forbidden)


# The pure core's whole import closure, not only its own import lines: what a module loads is what
# it drags into a worker, a fuzz harness or a test. None of these may be loaded by importing it.
FORBIDDEN_IN_THE_CLOSURE = frozenset({"asyncio", "socket", "selectors", "ssl", "sqlite3", "redis", "ldap3",
                                      "prometheus_client", "pydantic", "uvloop", "aiohttp", "subprocess",
                                      "threading"})
# Run with -S (no site: its .pth files import threading at start-up, and a third-party import fails
# outright) and -P: then the bare interpreter loads none of the above, and neither does the package
# root (rdpbalancer/__init__.py reads __version__ with importlib.metadata only when it is asked for:
# that loads socket, selectors and threading). `logging` loads threading too: the machine's Log
# commands carry the level numbers, not the logging module.
LOADED_BY_THE_PACKAGE_ROOT: frozenset[str] = frozenset()
# what the pure modules may load of the balancer: each other, the settings they are configured with
PURE = ("rdpbalancer.proto", "rdpbalancer.policy", "rdpbalancer.relay.machine", "rdpbalancer.relay.vocabulary",
        "rdpbalancer.relay.facts", "rdpbalancer.settings")
PURE_MODULES = sorted(
    {"rdpbalancer.relay.machine", "rdpbalancer.relay.vocabulary", "rdpbalancer.relay.facts"}
    | {f"rdpbalancer.{package}" + ("" if path.name == "__init__.py" else f".{path.stem}")
       for package in ("proto", "policy") for path in (PACKAGE / package).glob("*.py")})


def loaded_by(module: str) -> tuple[set[str], set[str]]:
    """What a fresh interpreter holds in sys.modules once the package root is imported, and once
    `module` is imported too."""
    code = ("import sys, json, rdpbalancer; root = sorted(sys.modules); "
            f"import {module}; print(json.dumps([root, sorted(sys.modules)]))")
    out = subprocess.run([sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    root, loaded = json.loads(out.stdout)
    return set(root), set(loaded)


def test_the_package_root_loads_no_more_than_is_excused() -> None:
    root, _ = loaded_by("rdpbalancer")
    assert root & FORBIDDEN_IN_THE_CLOSURE <= LOADED_BY_THE_PACKAGE_ROOT, sorted(root & FORBIDDEN_IN_THE_CLOSURE)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_the_pure_core_is_sans_io_in_its_whole_import_closure(module: str) -> None:
    root, loaded = loaded_by(module)
    forbidden = loaded & FORBIDDEN_IN_THE_CLOSURE
    assert not forbidden - (root & LOADED_BY_THE_PACKAGE_ROOT), f"{module} loads {sorted(forbidden)}"
    ours = {name for name in loaded if name.startswith("rdpbalancer.")}
    outside = {name for name in ours if not any(name == p or name.startswith(p + ".") for p in PURE)}
    assert outside <= {"rdpbalancer.relay"}, f"{module} loads {sorted(outside)}"  # relay/__init__.py is empty
