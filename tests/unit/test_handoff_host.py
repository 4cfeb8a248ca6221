"""The handoff host (handoff/host.py): the running balancer as both sides of a handoff see it,
over the composed parts, not the Balancer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rdpbalancer import clock
from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from rdpbalancer.handoff import host as host_module
from rdpbalancer.handoff.host import HandoffHost
from rdpbalancer.handoff.messages import HandoffError
from rdpbalancer.policy.model import AdminState
from rdpbalancer.relay.control import LocalControl
from tests.support.balancer import farm_config


@pytest.fixture
def bal(tmp_path: Path) -> Balancer:
    text = farm_config([("A", "127.0.0.1:1", 1), ("B", "127.0.0.1:2", 1)], tmp_path / "s.db")
    return Balancer(parse_config(text, str(tmp_path / "c.toml")))


def test_the_host_is_not_the_balancer_and_reaches_the_local_control(bal: Balancer) -> None:
    host = bal.handoff
    assert isinstance(host, HandoffHost) and not isinstance(host, Balancer)
    assert isinstance(host.control, LocalControl) and host.control is bal.control  # old.py sets its successor
    assert host.config_path == bal.reloader.status.path
    bal.reloader.status.path = "/elsewhere.toml"  # tests and ctl point it elsewhere after construction
    assert host.config_path == "/elsewhere.toml"
    assert host.snapshot is bal.snapshot and host.clock() == pytest.approx(bal.clock(), abs=1.0)


def test_the_runtime_state_carries_the_overrides_and_the_clock(bal: Balancer) -> None:
    bal.ops.set_admin_state("A", AdminState.DRAIN)
    bal.ops.set_weight("B", 7)
    state = bal.handoff.runtime_state()
    assert state.admin_overrides == {"A": AdminState.DRAIN}
    assert state.weight_overrides == {"B": 7}
    assert set(state.conditions) == {"A", "B"}
    assert not state.connections and not state.active_users
    assert state.clock_offset == clock.PROCESS_CLOCK.offset
    assert bal.handoff.session_count() == 0


class FailingHandover:
    def __init__(self, host: HandoffHost) -> None:
        self.host = host

    async def run(self) -> None:
        assert self.host.reloader.handed_over  # reloads are refused while it runs
        raise HandoffError("the new process failed")


async def test_a_failed_handoff_gives_reloads_back(bal: Balancer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "Handover", FailingHandover)
    host = bal.handoff
    assert host.start()
    assert not host.start()  # one at a time
    assert bal.reloader.handed_over
    await asyncio.wait_for(_settled(host), 5)
    assert host.handover is None and not bal.reloader.handed_over
    assert host.start()  # may be tried again
    await asyncio.wait_for(_settled(host), 5)


async def _settled(host: HandoffHost) -> None:
    while host.handover is not None:
        await asyncio.sleep(0)
