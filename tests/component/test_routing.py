"""The balancer in-process on real loopback sockets, in front of fake RDP servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from rdpbalancer.proto import build_connection_request, parse_connection_confirm
from tests.support.balancer import farm_config, refused_port, running
from tests.support.fakes import rdp_connect, start_farm, where


def port_of(bal) -> int:  # type: ignore[no-untyped-def]
    return bal.addresses[0][1]


async def test_many_users_spread_and_return_to_their_server(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    cfg = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    async with running(cfg) as bal:
        port = port_of(bal)
        users = [f"user{i:02d}" for i in range(60)]
        first = {u: await where(port, u) for u in users}
        assert set(first.values()) == {"TS01", "TS02", "TS03"}
        again = dict(zip(users, await asyncio.gather(*(where(port, u) for u in users)), strict=True))
        assert again == first
        # case and domain forms of one user are the same key
        assert await where(port, "CORP\\USER07") == first["user07"]
        assert await where(port, "User07@corp.example") == first["user07"]
    for s in farm:
        await s.stop()


async def test_client_gets_the_servers_connection_confirm_verbatim(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    async with running(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db")) as bal:
        client = await rdp_connect(port_of(bal), "alice")
        cc = parse_connection_confirm(client.confirm)
        assert cc.selected_protocol == 1
        await client.close()
    assert farm[0].cookies == [b"alice"]
    await farm[0].stop()


async def test_weights_are_respected_with_open_sessions(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    cfg = farm_config([("TS01", farm[0].address, 10), ("TS02", farm[1].address, 20)], tmp_path / "s.db")
    async with running(cfg) as bal:
        clients = [await rdp_connect(port_of(bal), f"u{i}") for i in range(30)]
        assert Counter(c.server for c in clients) == {"TS01": 10, "TS02": 20}
        for c in clients:
            await c.close()
    for s in farm:
        await s.stop()


async def test_refusing_server_is_skipped_for_new_users(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    with refused_port() as dead_port:  # nothing listens there: connection refused
        dead = f"127.0.0.1:{dead_port}"
        cfg = farm_config([("DEAD", dead, 100), *((s.name, s.address, 1) for s in farm)], tmp_path / "s.db")
        async with running(cfg) as bal:
            landed = [await where(port_of(bal), f"new{i}") for i in range(12)]
            assert "DEAD" not in landed and set(landed) == {"TS01", "TS02"}
            assert bal.ctx.stats.connect_failures["DEAD"] >= 1
            # no entry points at the dead server
            assert all(e.server != "DEAD" for e in bal.table)
    for s in farm:
        await s.stop()


async def test_sticky_user_of_unreachable_server_is_closed_and_kept(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    cfg = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    async with running(cfg) as bal:
        home = await where(port_of(bal), "alice")
        victim = next(s for s in farm if s.name == home)
        await victim.stop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(bal))
        writer.write(build_connection_request(cookie=b"alice"))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed promptly, client retries
        writer.close()
        entry = bal.table.get("alice", bal.ctx.clock())
        assert entry is not None and entry.server == home
    for s in farm:
        await s.stop()


async def test_no_cookie_sticks_on_source_ip(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    cfg = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    async with running(cfg) as bal:
        a = {await where(port_of(bal), None, local_host="127.0.0.5") for _ in range(4)}
        assert len(a) == 1
        assert bal.table.get("ip:127.0.0.5", bal.ctx.clock()) is not None
    for s in farm:
        await s.stop()


async def test_no_cookie_reject_and_balance(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    servers = [(s.name, s.address, 1) for s in farm]
    async with running(farm_config(servers, tmp_path / "a.db", balancer_extra='no_cookie = "reject"')) as bal:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(bal))
        writer.write(build_connection_request(cookie=None))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert bal.ctx.stats.connections["denied"] == 1
    async with running(farm_config(servers, tmp_path / "b.db", balancer_extra='no_cookie = "balance"')) as bal:
        landed = {await where(port_of(bal), None) for _ in range(4)}
        assert landed == {"TS01", "TS02"} and len(bal.table) == 0
    for s in farm:
        await s.stop()


async def test_relay_is_byte_exact_both_ways(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    async with running(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db")) as bal:
        client = await rdp_connect(port_of(bal), "alice")
        blob = bytes(range(256)) * 4096  # 1 MiB, echoed back by the fake server
        async def send() -> None:
            client.writer.write(blob)
            await client.writer.drain()
        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(client.reader.readexactly(len(blob)), 10)
        await sender
        assert got == blob
        client.writer.write_eof()  # half-close: the server's EOF comes back after its data
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
        await client.close()
        await asyncio.sleep(0)
    await farm[0].stop()


async def test_leastconn_sees_connections_in_progress(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    cfg = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")
    async with running(cfg) as bal:
        clients = await asyncio.gather(*(rdp_connect(port_of(bal), f"burst{i}") for i in range(20)))
        assert Counter(c.server for c in clients) == {"TS01": 10, "TS02": 10}
        for c in clients:
            await c.close()
    for s in farm:
        await s.stop()




async def test_a_cookie_cannot_take_another_clients_source_entry(tmp_path: Path) -> None:
    """`mstshash=ip:127.0.0.1` from 127.0.0.2 used to be a sticky hit on the entry of 127.0.0.1's
    cookie-less client. A name with ':' is no account name: the client counts as one without
    cookie, from its own address."""
    farm = await start_farm("TS01", "TS02")
    async with running(farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db")) as bal:
        port = port_of(bal)
        victim = await rdp_connect(port, None, local_host="127.0.0.1")  # entry ip:127.0.0.1, kept open
        assert bal.table.get("ip:127.0.0.1", 0.0) is not None
        intruder = await rdp_connect(port, "ip:127.0.0.1", local_host="127.0.0.2")
        assert intruder.server != victim.server  # the idle server, not the victim's
        assert bal.table.get("ip:127.0.0.2", 0.0) is not None
        assert [e.key for e in bal.table if e.server == intruder.server] == ["ip:127.0.0.2"]
        await intruder.close()
        await victim.close()
    for s in farm:
        await s.stop()
