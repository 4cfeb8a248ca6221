"""Farm policies with real sockets, real health checks and fake RDP servers: slow start after a
host restarts, hot spares, the per-user limit, and reloads of each."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import load_config
from rdpbalancer.health.state import Health
from rdpbalancer.policy.model import AdminState
from rdpbalancer.proto.builders import build_connection_request
from tests.support.balancer import farm_config, running, wait_until
from tests.support.fakes import RdpClient, rdp_connect, start_farm, was_cut, where

FAST_CHECKS = 'check = "rdp"\ninterval = "50ms"\ntimeout = "300ms"\nrise = 1\nfall = 1\n'
WAIT_S = 5.0


async def get(bal: Balancer, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{bal.admin.port}{path}") as resp:
        assert resp.status == 200
        return await resp.json()


def up(bal: Balancer, name: str) -> bool:
    return bal.monitor.trackers[name].state is Health.UP


async def test_a_restarted_host_gets_its_ramped_share_of_new_users_and_its_own_users_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Three servers, one restarted empty, 90 new users in its window: it takes no more than its
    ramped share, not all 90; a user whose entry points at it still goes there."""
    caplog.set_level(logging.INFO)
    farm = await start_farm("TS01", "TS02", "TS03")
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", health=FAST_CHECKS,
                       balancer_extra='slowstart = "60s"')
    held: list[RdpClient] = []
    try:
        async with running(text) as bal:
            port = bal.addresses[0][1]
            await wait_until(lambda: all(up(bal, n) for n in ("TS01", "TS02", "TS03")), WAIT_S)
            assert all(bal.router.ramp(n, time.time()) is None for n in ("TS01", "TS02", "TS03"))  # at start: none
            held += [await rdp_connect(port, f"morning{i}") for i in range(30)]  # 10 on each server
            assert Counter(c.server for c in held) == {"TS01": 10, "TS02": 10, "TS03": 10}
            fresh = farm[2]
            returning = next(c for c in held if c.server == "TS03")
            await fresh.crash()  # TS03 reboots: its sessions end with it, and their clients go
            for client in held:
                if client.server == "TS03":
                    await client.close()
            await wait_until(lambda: not up(bal, "TS03"), WAIT_S)
            await wait_until(lambda: bal.router.connections["TS03"] == 0, WAIT_S)
            await fresh.listen_again()
            await wait_until(lambda: up(bal, "TS03"), WAIT_S)
            assert "server TS03 takes new users gradually: slow start" in caplog.text
            placed = Counter()
            for i in range(90):  # the 9:00 storm, while TS03 is at the start of its window
                client = await rdp_connect(port, f"storm{i}")
                held.append(client)
                placed[client.server] += 1
            ramp = bal.router.ramp("TS03", time.time())
            assert ramp is not None
            busiest = max(bal.router.connections["TS01"], bal.router.connections["TS02"])
            assert placed["TS03"] <= ramp[0] * busiest + 1, (placed, ramp)  # its share, not all 90
            assert placed["TS01"] + placed["TS02"] >= 80
            print(f"\nslow start, real sockets: 90 new users after TS03 restarted: {dict(sorted(placed.items()))}; "
                  f"TS03 at {ramp[0]:.0%} of its weight, {ramp[1]:.0f}s left")
            # a returning user whose entry points at TS03: straight there
            assert await where(port, returning_user(returning, held)) == "TS03"
            # visible in the API and the metrics
            servers = await get(bal, "/api/v1/servers")
            ts03 = next(s for s in servers["servers"] if s["name"] == "TS03")
            assert ts03["slowstart"]["window_s"] == 60.0 and ts03["slowstart"]["share"] < 0.2
            assert ts03["pools"][0]["effective_weight"] < 0.2
            body = bal.metrics.exposition().decode()
            assert 'rdpbalancer_server_effective_weight{pool="default",server="TS01"} 1.0' in body
            assert 'rdpbalancer_server_effective_weight{pool="default",server="TS03"} 0.' in body
            explained = await get(bal, "/api/v1/explain?user=newcomer")
            assert "slow start: TS03 at" in explained["decision"]["detail"]
            for client in held:
                await client.close()
    finally:
        for s in farm:
            await s.stop()


def returning_user(client: RdpClient, held: list[RdpClient]) -> str:
    """The user name of a connection made in the morning (held[i] is morning{i})."""
    return f"morning{held.index(client)}"


async def test_a_reload_keeps_a_ramp_under_way_and_applies_a_new_window(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    path = tmp_path / "c.toml"
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", health=FAST_CHECKS,
                       balancer_extra='slowstart = "60s"')
    path.write_text(text)
    bal = Balancer(load_config(path))
    await bal.start()
    try:
        port = bal.addresses[0][1]
        await wait_until(lambda: up(bal, "TS01") and up(bal, "TS02"), WAIT_S)
        held = [await rdp_connect(port, f"u{i}") for i in range(4)]
        bal.ops.set_admin_state("TS02", AdminState.DRAIN)
        bal.ops.set_admin_state("TS02", AdminState.READY)  # out of drain: a ramp
        before = bal.router.ramp("TS02", time.time())
        assert before is not None
        path.write_text(text.replace('slowstart = "60s"', 'slowstart = "120s"'))
        assert await bal.reloader.reload() is None
        after = bal.router.ramp("TS02", time.time())
        assert after is not None and after[0] == pytest.approx(before[0], abs=0.02)  # the same share ...
        assert after[1] == pytest.approx(before[1] * 2, abs=1.0)  # ... and twice the time left
        for client in held:  # live sessions untouched
            client.writer.write(b"ping")
            assert await asyncio.wait_for(client.reader.readexactly(4), WAIT_S) == b"ping"
        path.write_text(text.replace('slowstart = "60s"', 'slowstart = "0s"'))
        assert await bal.reloader.reload() is None
        assert bal.router.ramp("TS02", time.time()) is None  # off: full weight at once
        for client in held:
            await client.close()
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()


def with_backup(text: str, farm_addresses: dict[str, str], name: str) -> str:
    row = f'name = "{name}", address = "{farm_addresses[name]}", weight = 1 }}'
    assert row in text
    return text.replace(row, f'name = "{name}", address = "{farm_addresses[name]}", weight = 1, backup = true }}')


async def test_a_backup_takes_new_users_only_while_the_others_are_down_and_keeps_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    farm = await start_farm("TS01", "TS02", "SPARE")
    addresses = {s.name: s.address for s in farm}
    text = with_backup(farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db",
                                   health=FAST_CHECKS), addresses, "SPARE")
    try:
        async with running(text) as bal:
            port = bal.addresses[0][1]
            await wait_until(lambda: all(up(bal, s.name) for s in farm), WAIT_S)
            assert {await where(port, f"day{i}") for i in range(10)} == {"TS01", "TS02"}
            body = bal.metrics.exposition().decode()
            assert 'rdpbalancer_pool_on_backup{pool="default"} 0.0' in body
            assert 'rdpbalancer_server_backup{pool="default",server="SPARE"} 1.0' in body
            for s in farm[:2]:
                await s.stop_listening()
            await wait_until(lambda: not up(bal, "TS01") and not up(bal, "TS02"), WAIT_S)
            night = await rdp_connect(port, "night")
            assert night.server == "SPARE"
            assert 'server=SPARE' in caplog.text and 'note="backup: no other server of pool default takes new users: ' \
                'TS01 down, TS02 down"' in caplog.text
            assert 'rdpbalancer_pool_on_backup{pool="default"} 1.0' in bal.metrics.exposition().decode()
            for s in farm[:2]:
                await s.listen_again()
            await wait_until(lambda: up(bal, "TS01") and up(bal, "TS02"), WAIT_S)
            assert await where(port, "morning") in ("TS01", "TS02")  # new users: the primaries again
            assert await where(port, "night") == "SPARE"  # her session lives on the spare: she keeps it
            await night.close()
            assert 'rdpbalancer_pool_on_backup{pool="default"} 0.0' in bal.metrics.exposition().decode()
    finally:
        for s in farm:
            await s.stop()


async def test_the_per_user_limit_refuses_the_next_connection_and_nobody_else(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    farm = await start_farm("TS01", "TS02")
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    text = text.replace("[limits]\n", "[limits]\nper_user_connections = 2\n")
    try:
        async with running(text) as bal:
            port = bal.addresses[0][1]
            loops = [await rdp_connect(port, "loop") for _ in range(2)]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(build_connection_request(cookie=b"loop"))
            assert await was_cut(reader)  # refused after its Connection Request, nothing sent back
            writer.close()
            assert 'reason=per-user: user "loop": user loop has 2 open connection(s) ' \
                   "([limits] per_user_connections = 2)" in caplog.text
            assert 'rdpbalancer_connections_refused_total{reason="per-user"} 1.0' in bal.metrics.exposition().decode()
            refusal = next(d for d in bal.ctx.decisions if d["reason"] == "per-user")  # the API's recent decisions
            assert refusal["user"] == "loop" and refusal["server"] is None
            assert "per_user_connections" in refusal["detail"]
            assert await where(port, "alice") in ("TS01", "TS02")  # other users: untouched
            await loops[0].close()
            await wait_until(lambda: bal.router.user_connections["loop"] == 1, WAIT_S)
            again = await rdp_connect(port, "loop")  # one left: room again
            assert again.server == loops[0].server  # and still her server
            for client in (loops[1], again):
                await client.close()
            await wait_until(lambda: not bal.router.user_connections, WAIT_S)
    finally:
        for s in farm:
            await s.stop()


async def test_backup_and_per_user_change_on_reload_without_touching_live_sessions(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "SPARE")
    addresses = {s.name: s.address for s in farm}
    path = tmp_path / "c.toml"
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    path.write_text(text)
    bal = Balancer(load_config(path))
    await bal.start()
    try:
        port = bal.addresses[0][1]
        held = [await rdp_connect(port, f"u{i}") for i in range(4)]
        assert Counter(c.server for c in held) == {"TS01": 2, "SPARE": 2}
        changed = with_backup(text, addresses, "SPARE").replace("[limits]\n", "[limits]\nper_user_connections = 1\n")
        path.write_text(changed)
        assert await bal.reloader.reload() is None
        assert {await where(port, f"new{i}") for i in range(4)} == {"TS01"}  # SPARE is a spare now
        spare_user = next(i for i, c in enumerate(held) if c.server == "SPARE")
        await held.pop(spare_user).close()
        assert await where(port, f"u{spare_user}") == "SPARE"  # a user with an entry keeps their server
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(build_connection_request(cookie=b"u0"))  # u0 has a connection open: the limit is 1
        assert await was_cut(reader)
        writer.close()
        for client in held:  # the sessions that were there go on
            client.writer.write(b"ping")
            assert await asyncio.wait_for(client.reader.readexactly(4), WAIT_S) == b"ping"
            await client.close()
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()
