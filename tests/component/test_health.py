"""Health checks and the down-server policy, on real sockets with fake RDP servers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.health.state import Health
from rdpbalancer.policy.model import AdminState
from rdpbalancer.proto import build_connection_request
from tests.support.balancer import advance_clock, farm_config, running, wait_until
from tests.support.fakes import FakeRdpServer, rdp_connect, start_farm, was_cut, where

FAST_CHECKS = 'check = "rdp"\ninterval = "50ms"\ntimeout = "300ms"\nrise = 2\nfall = 2\n'
WAIT_S = 5.0


@asynccontextmanager
async def farm_and_balancer(tmp_path: Path, names: tuple[str, ...] = ("A", "B", "C"),
                            health: str = FAST_CHECKS) -> AsyncIterator[tuple[Balancer, dict[str, FakeRdpServer]]]:
    farm = await start_farm(*names)
    try:
        cfg = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", health=health)
        async with running(cfg) as bal:
            await wait_until(lambda: all(t.state is Health.UP for t in bal.monitor.trackers.values()), WAIT_S)
            yield bal, {s.name: s for s in farm}
    finally:
        for s in farm:
            await s.stop()


def state(bal: Balancer, name: str) -> Health:
    return bal.monitor.trackers[name].state


async def refused(port: int, user: str) -> bool:
    """True when the balancer closes the client without a Connection Confirm."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(build_connection_request(cookie=user.encode()))
    data = await asyncio.wait_for(reader.read(), WAIT_S)
    writer.close()
    return data == b""


@pytest.mark.parametrize("failure", ["stop-listening", "silent", "reset", "garbage"])
async def test_each_kind_of_failure_is_detected_and_avoided(tmp_path: Path, failure: str) -> None:
    async with farm_and_balancer(tmp_path) as (bal, farm):
        port = bal.addresses[0][1]
        if failure == "stop-listening":
            await farm["A"].stop_listening()
        else:
            farm["A"].mode = failure
        await wait_until(lambda: state(bal, "A") is Health.DOWN, WAIT_S)
        assert bal.monitor.trackers["A"].last_error
        landed = {await where(port, f"new{i}") for i in range(8)}
        assert landed == {"B", "C"}
        transition = bal.monitor.history[-1]
        assert (transition.server, transition.old, transition.new) == ("A", Health.UP, Health.DOWN)


async def test_server_that_comes_back_takes_users_after_rise(tmp_path: Path) -> None:
    async with farm_and_balancer(tmp_path) as (bal, farm):
        await farm["A"].stop_listening()
        await wait_until(lambda: state(bal, "A") is Health.DOWN, WAIT_S)
        await farm["A"].listen_again()
        await wait_until(lambda: state(bal, "A") is Health.UP, WAIT_S)
        held = [await rdp_connect(bal.addresses[0][1], f"u{i}") for i in range(6)]
        assert {c.server for c in held} == {"A", "B", "C"}
        for c in held:
            await c.close()


async def test_passive_failure_is_noticed_between_checks(tmp_path: Path) -> None:
    slow = 'check = "rdp"\ninterval = "1h"\ntimeout = "300ms"\nrise = 1\nfall = 1\n'
    async with farm_and_balancer(tmp_path, health=slow) as (bal, farm):
        await farm["A"].stop_listening()
        port = bal.addresses[0][1]
        for i in range(6):  # new users: a failed connect to A falls through to B or C
            assert await where(port, f"x{i}") in {"A", "B", "C"}
        assert state(bal, "A") is Health.DOWN
        assert "passive" in (bal.monitor.trackers["A"].last_error or "")


async def test_sticky_user_held_within_failover_after_then_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    health = FAST_CHECKS + 'failover_after = "1s"\n'
    async with farm_and_balancer(tmp_path, health=health) as (bal, farm):
        port = bal.addresses[0][1]
        home = await where(port, "alice")
        await farm[home].stop_listening()
        await wait_until(lambda: state(bal, home) is Health.DOWN, WAIT_S)
        assert await refused(port, "alice")  # held: their session lives there
        entry = bal.table.get("alice", bal.ctx.clock())
        assert entry is not None and entry.server == home
        advance_clock(monkeypatch, 1.0)  # failover_after, on the process clock
        assert bal.router.condition(home).down_for(bal.ctx.clock()) >= 1.0
        moved = await where(port, "alice")
        assert moved != home
        entry = bal.table.get("alice", bal.ctx.clock())
        assert entry is not None and entry.server == moved
        assert await where(port, "alice") == moved  # and stays there


async def test_drain_admits_sticky_users_and_refuses_new_ones(tmp_path: Path) -> None:
    async with farm_and_balancer(tmp_path) as (bal, _):
        port = bal.addresses[0][1]
        home = await where(port, "alice")
        bal.router.set_admin_state(home, AdminState.DRAIN, time.time())
        assert await where(port, "alice") == home
        landed = {await where(port, f"new{i}") for i in range(8)}
        assert home not in landed


async def test_maint_admits_nobody(tmp_path: Path) -> None:
    async with farm_and_balancer(tmp_path) as (bal, farm):
        port = bal.addresses[0][1]
        home = await where(port, "alice")
        bal.router.set_admin_state(home, AdminState.MAINT, time.time())
        assert await where(port, "alice") != home
        landed = {await where(port, f"new{i}") for i in range(8)}
        assert home not in landed
        assert [c for c in farm[home].cookies if c] == [b"alice"]  # no user reached it after (probes have no cookie)


async def test_config_state_applies_at_start(tmp_path: Path) -> None:
    farm = await start_farm("A", "B")
    cfg = farm_config([("A", farm[0].address, 1), ("B", farm[1].address, 1)], tmp_path / "s.db")
    a = f'address = "{farm[0].address}", weight = 1'
    cfg = cfg.replace(a, a + ', state = "maint"')
    async with running(cfg) as bal:
        assert {await where(bal.addresses[0][1], f"u{i}") for i in range(4)} == {"B"}
    for s in farm:
        await s.stop()


async def test_live_sessions_survive_their_server_being_marked_down(tmp_path: Path) -> None:
    async with farm_and_balancer(tmp_path) as (bal, farm):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        await farm[client.server].stop_listening()  # checks fail; the live session is untouched
        await wait_until(lambda: state(bal, client.server) is Health.DOWN, WAIT_S)
        client.writer.write(b"still here")
        assert await asyncio.wait_for(client.reader.readexactly(10), WAIT_S) == b"still here"
        await client.close()


async def test_shutdown_sessions_cuts_live_sessions(tmp_path: Path) -> None:
    health = FAST_CHECKS + 'on_down = "shutdown-sessions"\n'
    async with farm_and_balancer(tmp_path, health=health) as (bal, farm):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        other = await rdp_connect(bal.addresses[0][1], "bob")
        assert other.server != client.server
        await farm[client.server].stop_listening()
        await wait_until(lambda: state(bal, client.server) is Health.DOWN, WAIT_S)
        assert await was_cut(client.reader)
        other.writer.write(b"ping")
        assert await asyncio.wait_for(other.reader.readexactly(4), WAIT_S) == b"ping"  # others untouched
        await client.close()
        await other.close()


async def test_no_healthy_server_closes_cleanly(tmp_path: Path) -> None:
    async with farm_and_balancer(tmp_path, names=("A",)) as (bal, farm):
        await farm["A"].stop_listening()
        await wait_until(lambda: state(bal, "A") is Health.DOWN, WAIT_S)
        assert await refused(bal.addresses[0][1], "zed")
        assert bal.ctx.stats.connections["no-server"] == 1


async def test_a_client_leaving_during_the_backend_connect_is_no_fault_of_the_server(tmp_path: Path) -> None:
    """The connect to the server is slow (its accept queue is full: our SYN waits for a
    retransmit) and the client leaves meanwhile. That used to count as a failed connect of
    the server (rdpbalancer_backend_connect_failures, passive `fall`): three impatient clients
    could take a healthy server down. It is an abandoned attempt, nobody's fault."""
    slow = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(0)  # one pending connection at most...
    filler = socket.create_connection(slow.getsockname())  # ... and here it is: later SYNs wait
    address = f"127.0.0.1:{slow.getsockname()[1]}"
    async with running(farm_config([("SLOW", address, 1)], tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        clients = []
        for i in range(3):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(build_connection_request(cookie=f"impatient{i}".encode()))
            clients.append(writer)
        await wait_until(lambda: bal.router.connections["SLOW"] == 3, 5)  # three connects under way
        for writer in clients:
            writer.transport.abort()
        accepted, _ = await asyncio.to_thread(slow.accept)  # room again: the retransmitted SYNs get through
        await wait_until(lambda: bal.router.connections["SLOW"] == 0, 10)
        assert bal.view.stats().connect_failures["SLOW"] == 0
        assert not bal.ctx.sessions
        accepted.close()
    filler.close()
    slow.close()
