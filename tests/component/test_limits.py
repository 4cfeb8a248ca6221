"""[limits] and PROXY protocol listeners, with a real balancer on loopback addresses."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.proto.builders import build_connection_request, build_proxy_v1, build_proxy_v2
from tests.support.balancer import farm_config, running, wait_until
from tests.support.fakes import WHO, FakeRdpServer, rdp_connect, read_tpkt, start_farm, was_cut, where


def limited(farm: list[FakeRdpServer], tmp_path, limits: str, **kw: str) -> str:  # type: ignore[no-untyped-def]
    return farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", limits=limits, **kw)


async def refused(port: int, local_host: str = "127.0.0.1") -> bool:
    """Connected, then closed by the balancer before any answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local_host, 0))
    try:
        writer.write(build_connection_request(cookie=b"someone"))
        return await was_cut(reader, 2.0)
    finally:
        writer.transport.abort()


def refusals(bal: Balancer) -> dict[str, int]:
    return dict(bal.view.stats().refused)


def port(bal: Balancer) -> int:
    return bal.addresses[0][1]


async def test_per_source_connections_and_rate(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    farm = await start_farm("TS01")
    text = limited(farm, tmp_path, "per_source_connections = 3\nper_source_rate = 2\nper_source_burst = 6")
    async with running(text) as bal:
        held = [await rdp_connect(port(bal), f"u{i}") for i in range(3)]
        assert await refused(port(bal))  # a 4th at once from 127.0.0.1
        assert await where(port(bal), "other", local_host="127.0.0.2") == "TS01"  # another address is fine
        assert refusals(bal) == {"per-source-connections": 1}
        assert "refused client=127.0.0.1" in caplog.text and "per_source_connections (3)" in caplog.text
        for c in held:
            await c.close()
        # a burst of 6: 3 went to the held ones (the refused 4th took none), 3 are left
        await wait_until(lambda: bal.ctx.admission.open == 0)
        results = [await where(port(bal), f"r{i}") for i in range(3)]
        assert results == ["TS01"] * 3
        assert await refused(port(bal))  # the bucket is empty: 2 per second from here
        assert refusals(bal)["per-source-rate"] == 1
        await asyncio.sleep(0.6)
        assert await where(port(bal), "later") == "TS01"
    for s in farm:
        await s.stop()


async def test_max_handshakes_and_max_connections(tmp_path) -> None:  # type: ignore[no-untyped-def]
    farm = await start_farm("TS01")
    async with running(limited(farm, tmp_path, "max_handshakes = 4\nmax_connections = 6")) as bal:
        silent = [await asyncio.open_connection("127.0.0.1", port(bal)) for _ in range(4)]
        assert await refused(port(bal))  # a 5th still before its request
        for _reader, writer in silent:
            writer.close()
        await wait_until(lambda: bal.ctx.admission.handshaking == 0)
        held = [await rdp_connect(port(bal), f"u{i}") for i in range(6)]
        assert await refused(port(bal))  # a 7th connection in all
        assert refusals(bal) == {"max-handshakes": 1, "max-connections": 1}
        for c in held:
            await c.close()
        await wait_until(lambda: bal.ctx.admission.open == 0)
        assert await where(port(bal), "again") == "TS01"
    for s in farm:
        await s.stop()


async def test_invented_users_from_one_address_cannot_flood_the_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    farm = await start_farm("TS01", "TS02")
    async with running(limited(farm, tmp_path, "new_users_per_source = 5")) as bal:
        homes = {u: await where(port(bal), u, local_host="127.0.0.9") for u in ("alice", "bob")}
        # one user, three connections: a known user after the first, one new user in all
        assert {await where(port(bal), "someone", local_host="127.0.0.2") for _ in range(3)} <= {"TS01", "TS02"}
        results = []
        for i in range(8):
            try:
                results.append(await where(port(bal), f"invented{i}", local_host="127.0.0.2"))
            except (asyncio.IncompleteReadError, ConnectionError):
                results.append(None)
        assert results.count(None) == 4  # 5 new users a minute: "someone" and 4 invented ones
        assert len(bal.table) == 2 + 5
        assert refusals(bal) == {"new-users-per-source": 4}
        for user, home in homes.items():  # known users and other addresses are not affected
            assert await where(port(bal), user, local_host="127.0.0.2") == home
        assert await where(port(bal), "carol", local_host="127.0.0.3") in {"TS01", "TS02"}
    for s in farm:
        await s.stop()


def proxied(farm: list[FakeRdpServer], tmp_path, trusted: str, limits: str = "") -> str:  # type: ignore[no-untyped-def]
    """One PROXY listener; clients behind the proxy in 203.0.113.0/24 go to TS02, others to TS01."""
    text = farm_config([(farm[0].name, farm[0].address, 1)], tmp_path / "s.db",
                       limits=limits or "per_source_connections = 1000")
    text = text.replace('listen = ["127.0.0.1:0"]', 'listen = [{ address = "127.0.0.1:0", proxy_protocol = true }]\n'
                        f'trusted_proxies = ["{trusted}"]')
    return text + f"""
[[pool]]
name = "far"
servers = [{{ name = "TS02", address = "{farm[1].address}" }}]

[[route]]
sources = ["203.0.113.0/24"]
pool = "far"

[[route]]
pool = "default"
"""


async def via_proxy(port: int, header: bytes, user: str, local_host: str = "127.0.0.1") -> str | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local_host, 0))
    try:
        writer.write(header + build_connection_request(cookie=user.encode()))
        try:
            await asyncio.wait_for(read_tpkt(reader), 3)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        writer.write(WHO)
        return (await reader.readline()).decode().strip()
    finally:
        writer.transport.abort()


async def test_proxy_protocol_from_a_trusted_proxy_gives_the_real_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    farm = await start_farm("TS01", "TS02")
    async with running(proxied(farm, tmp_path, "127.0.0.1/32")) as bal:
        p = port(bal)
        far_v1 = build_proxy_v1(("203.0.113.7", 50000), ("192.0.2.1", 3389))
        near_v2 = build_proxy_v2(("198.51.100.7", 50000), ("192.0.2.1", 3389))
        far_v6 = build_proxy_v2(("2001:db8::7", 50000), ("2001:db8::1", 3389))
        assert await via_proxy(p, far_v1, "alice") == "TS02"  # source rule saw 203.0.113.7
        assert await via_proxy(p, near_v2, "bob") == "TS01"
        assert await via_proxy(p, far_v6, "carol") == "TS01"
        assert await via_proxy(p, build_proxy_v2(), "dave") == "TS01"  # LOCAL: the proxy itself
        clients = {d["user"]: d["client"] for d in bal.ctx.decisions}
        assert clients["alice"] == "203.0.113.7" and clients["bob"] == "198.51.100.7"
        assert clients["carol"] == "2001:db8::7" and clients["dave"] == "127.0.0.1"
        # the header split over several reads is the same
        reader, writer = await asyncio.open_connection("127.0.0.1", p)
        for i in range(0, len(far_v1), 5):
            writer.write(far_v1[i:i + 5])
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(build_connection_request(cookie=b"erin"))
        await read_tpkt(reader)
        writer.transport.abort()
        # no header, or junk: refused as malformed
        assert await via_proxy(p, b"", "mallory") is None
        assert await via_proxy(p, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 03389\r\n", "mallory") is None
        assert bal.view.stats().malformed["not-proxy"] == 1 and bal.view.stats().malformed["bad-proxy-v1"] == 1
    for s in farm:
        await s.stop()


async def test_limits_count_the_client_behind_the_proxy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    farm = await start_farm("TS01", "TS02")
    async with running(proxied(farm, tmp_path, "127.0.0.1/32", "new_users_per_source = 2")) as bal:
        p = port(bal)
        one = build_proxy_v1(("198.51.100.1", 40000), ("192.0.2.1", 3389))
        two = build_proxy_v1(("198.51.100.2", 40000), ("192.0.2.1", 3389))
        assert [await via_proxy(p, one, f"x{i}") for i in range(3)] == ["TS01", "TS01", None]
        assert await via_proxy(p, two, "y0") == "TS01"  # another client behind the same proxy
    for s in farm:
        await s.stop()


async def test_a_proxy_header_from_an_untrusted_address_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    farm = await start_farm("TS01", "TS02")
    async with running(proxied(farm, tmp_path, "127.0.0.2/32")) as bal:
        spoof = build_proxy_v1(("203.0.113.7", 50000), ("192.0.2.1", 3389))
        assert await via_proxy(port(bal), spoof, "alice", local_host="127.0.0.1") is None
        assert refusals(bal) == {"untrusted-proxy": 1}
        assert await via_proxy(port(bal), spoof, "alice", local_host="127.0.0.2") == "TS02"
    for s in farm:
        await s.stop()
