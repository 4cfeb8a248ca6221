"""The read model (ports.ReadModel, view.View) hands readers values as of the call: frozen
snapshots and copies, never the live router, table, health monitor, store or poller."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from rdpbalancer.policy.model import AdminState
from rdpbalancer.ports import ReadModel
from rdpbalancer.view import View
from tests.support.balancer import farm_config

LIVE = {"router", "table", "monitor", "store", "hosts"}


@pytest.fixture
def bal(tmp_path: Path) -> Balancer:
    servers = [("A", "127.0.0.1:1", 1), ("B", "127.0.0.1:2", 2)]
    return Balancer(parse_config(farm_config(servers, tmp_path / "s.db")))


def test_the_port_names_no_live_component() -> None:
    members = {name for name in dir(ReadModel) if not name.startswith("_")}
    assert not members & LIVE


def test_routing_is_a_frozen_snapshot(bal: Balancer) -> None:
    view: ReadModel = bal.view
    before = view.routing()
    bal.ops.set_admin_state("A", AdminState.DRAIN)
    bal.router.connections["B"] += 3
    assert before.servers["A"].condition.admin == AdminState.READY  # the value did not move
    assert before.servers["B"].connections == 0
    after = view.routing()
    assert after.servers["A"].condition.admin == AdminState.DRAIN
    assert after.servers["B"].connections == 3
    assert dataclasses.is_dataclass(after) and type(after).__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert set(after.on_backup) == {"default"}


def test_sticky_entries_are_copies(bal: Balancer) -> None:
    bal.table.assign("alice", "default", "A", bal.clock())
    entry = bal.view.sticky_entry("alice")
    assert entry is not None and entry.server == "A"
    entry.server = "B"
    assert bal.table.get("alice", bal.clock()).server == "A"  # type: ignore[union-attr]
    page = bal.view.sticky_page(None, 0, 10)
    assert page.total == 1 and page.entries[0] is not bal.table.get("alice", bal.clock())
    assert bal.view.sticky_page("B", 0, 10).total == 0
    assert bal.view.sticky_counts().entries == 1


def test_store_health_and_host_sessions_are_values(bal: Balancer) -> None:
    health = bal.view.store_health()
    assert (health.shared, health.unsaved) == (False, 0)
    hosts = bal.view.host_sessions()
    assert hosts.hosts == () and dict(hosts.duplicates) == {}
    assert bal.view.health_events() == []


def test_overrides_are_a_copy(bal: Balancer) -> None:
    view = bal.view
    assert isinstance(view, View)
    bal.ops.set_admin_state("A", AdminState.MAINT)
    overrides = view.admin_overrides
    bal.ops.set_admin_state("A", AdminState.READY)
    assert overrides == {"A": AdminState.MAINT}


def test_counters_status_and_decisions_are_copies(bal: Balancer) -> None:
    view = bal.view
    stats, status, decisions = view.stats(), view.config_status, view.decisions
    bal.ctx.stats.connections["new"] += 1
    bal.ctx.decisions.append({"reason": "new"})
    bal.reloader.status.reloads_ok += 1
    assert stats.connections["new"] == 0 and view.stats().connections["new"] == 1
    assert status.reloads_ok == 0 and view.config_status.reloads_ok == 1
    assert len(decisions) == 0 and len(view.decisions) == 1
