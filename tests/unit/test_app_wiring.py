"""The composition root passes collaborators to constructors (STYLE.md): no `a.b = c` wiring after
construction but the one cycle it names, and each collaborator reaches the part that uses it."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

from rdpbalancer import app
from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from rdpbalancer.config.compile import compile_config
from rdpbalancer.reloader import configure
from tests.support.balancer import farm_config

# operator actions of the whole process (reload, handoff) act on the parts, Operations among them
CYCLE = {"self.ops.on_reload", "self.ops.on_handoff"}


def assigned_into_parts(function: object) -> set[str]:
    """`self.x.y = ...` targets in a function: an attribute of another object set after it was made."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    found = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign | ast.AugAssign) else []
        for target in targets:
            for leaf in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Attribute):
                    found.add(ast.unparse(leaf))
    return found


def test_the_balancer_is_wired_through_constructors_but_for_one_cycle() -> None:
    assert assigned_into_parts(Balancer.__init__) == CYCLE
    others = [m for name, m in inspect.getmembers(Balancer, inspect.isfunction) if name != "__init__"]
    assert all(not assigned_into_parts(m) for m in others)


def test_app_holds_no_reload_or_handoff() -> None:
    source = Path(app.__file__).read_text()
    for gone in ("def prepare", "def commit", "def _configure", "def runtime_state", "def pause_services",
                 "def resume_services", "def _handoff"):
        assert gone not in source


def _balancer(tmp_path: Path, extra: str = "") -> Balancer:
    return Balancer(parse_config(farm_config([("A", "127.0.0.1:1", 1)], tmp_path / "s.db", extra=extra)))


def test_collaborators_reach_their_users(tmp_path: Path) -> None:
    bal = _balancer(tmp_path)
    histograms = bal.metrics.histograms
    assert bal.ctx.observe_handshake == histograms.handshake.observe
    assert bal.ctx.observe_connect == histograms.backend_connect.observe
    assert bal.monitor.on_check == histograms.health_checked
    assert bal.ops.on_reload == bal.reloader.reload
    assert bal.ops.on_handoff == bal.handoff.start
    assert bal.view.workers is bal.workers is None  # one process: no pool
    assert bal.directory is bal.groups.current


def test_the_health_monitor_cuts_the_sessions_of_the_relay_context(tmp_path: Path) -> None:
    bal = _balancer(tmp_path)
    cut: list[str] = []

    class Live:
        server = bal.snapshot.policy.servers()["A"]

        def abort(self, reason: str) -> None:
            cut.append(reason)

    bal.ctx.sessions["s1"] = Live()  # type: ignore[assignment]
    assert bal.monitor.on_shutdown_sessions("A") == 1
    assert bal.monitor.on_shutdown_sessions("B") == 0
    assert cut == ["server A shut down"]


def test_configure_puts_the_settings_into_every_part(tmp_path: Path) -> None:
    bal = _balancer(tmp_path)
    changed = parse_config(farm_config([("A", "127.0.0.1:1", 1)], tmp_path / "s.db",
                                       health='check = "none"\non_down = "shutdown-sessions"'))
    assert not bal.monitor.shutdown_sessions_on_down
    configure(bal.reloader.parts, compile_config(changed))
    assert bal.monitor.shutdown_sessions_on_down


async def test_a_reload_is_refused_once_a_handoff_started(tmp_path: Path) -> None:
    bal = _balancer(tmp_path)
    bal.reloader.hand_over()
    error = await bal.reloader.reload()
    assert error is not None and "handing over" in error
    assert bal.reloader.status.reloads_failed == 1
    bal.reloader.take_back()
    assert not bal.reloader.handed_over
