"""max_sessions with real sockets and fake RDP servers: a full server takes no new user, its
users still reach it, and a new user is refused as `full` (closed, logged, counted) when every
server is at its cap."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import load_config
from rdpbalancer.policy.model import Reason, RouteRequest
from rdpbalancer.proto.builders import build_connection_request
from tests.support.balancer import farm_config, running
from tests.support.fakes import rdp_connect, start_farm, was_cut, where


async def test_a_full_pool_refuses_new_users_as_full_and_keeps_returning_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    farm = await start_farm("TS01", "TS02")
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    text = text.replace("weight = 1 }", "weight = 1, max_sessions = 1 }")
    try:
        async with running(text) as bal:
            port = bal.addresses[0][1]
            held = [await rdp_connect(port, user) for user in ("alice", "bob")]  # one on each server
            assert {c.server for c in held} == {"TS01", "TS02"}
            # carol: both servers are at their cap of one connection
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(build_connection_request(cookie=b"carol"))
            assert await was_cut(reader)
            writer.close()
            assert "user=\"carol\" reason=full: every server of pool default that takes new users is at its " \
                   "max_sessions (TS01 1/1, TS02 1/1 connections)" in caplog.text
            assert bal.ctx.stats.connections["full"] == 1
            # alice's second connection (a reconnect while the first is open) still reaches her server
            assert await where(port, "alice") == held[0].server
            body = bal.metrics.exposition().decode()
            assert 'rdpbalancer_server_max_sessions{pool="default",server="TS01"} 1.0' in body
            assert 'rdpbalancer_connections_total{result="full"} 1.0' in body
            await held[1].close()  # bob leaves: TS02 has room again
            assert await where(port, "carol") == held[1].server
            await held[0].close()
    finally:
        for s in farm:
            await s.stop()


async def test_a_reload_changes_the_cap_and_leaves_live_sessions_alone(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    path = tmp_path / "c.toml"
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    path.write_text(text.replace("weight = 1 }", "weight = 1, max_sessions = 1 }"))
    bal = Balancer(load_config(path))
    await bal.start()
    try:
        port = bal.addresses[0][1]
        held = [await rdp_connect(port, user) for user in ("alice", "bob")]  # both servers full
        assert bal.router.decide(RouteRequest("127.0.0.1", "carol"), 0.0).reason is Reason.FULL
        path.write_text(text.replace("weight = 1 }", "weight = 1, max_sessions = 2 }"))
        assert await bal.reloader.reload() is None
        carol = await rdp_connect(port, "carol")  # room again, and the held sessions still flow
        for client in held:
            client.writer.write(b"still here")
            assert await asyncio.wait_for(client.reader.readexactly(10), 5) == b"still here"  # the fake echoes
        for client in (*held, carol):
            await client.close()
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()
