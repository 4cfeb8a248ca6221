"""A real HAProxy in front, sending PROXY v1 and v2 headers: the balancer sees the real client.

HAProxy (the Debian package, also the benchmarks' reference) listens on 127.0.0.1 and forwards
to a `proxy_protocol = true` listener with `send-proxy` / `send-proxy-v2`; clients connect from
127.0.0.5 and 127.0.0.6, and a `sources` route sends 127.0.0.6 to its own pool. Through the
proxy, the balancer's decisions must name the clients, not HAProxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.balancer import running
from tests.support.fakes import FakeRdpServer, start_farm, where
from tests.support.haproxy import haproxy_in_front


def config(farm: list[FakeRdpServer], tmp_path: Path, port: int, trusted: str) -> str:
    return f"""
[balancer]
listen = [{{ address = "127.0.0.1:{port}", proxy_protocol = true }}]
trusted_proxies = ["{trusted}"]
handshake_timeout = "2s"
[sticky]
path = "{tmp_path / 's.db'}"
sync = "normal"
[health]
check = "none"
[admin]
listen = "127.0.0.1:0"
[[pool]]
name = "near"
servers = [{{ name = "TS01", address = "{farm[0].address}" }}]
[[pool]]
name = "far"
servers = [{{ name = "TS02", address = "{farm[1].address}" }}]
[[route]]
sources = ["127.0.0.6/32"]
pool = "far"
[[route]]
pool = "near"
"""


async def test_clients_behind_a_real_haproxy_are_seen_and_routed_by_their_own_address(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    async with running(config(farm, tmp_path, 0, "127.0.0.1/32")) as bal:
        port = bal.addresses[0][1]
        with haproxy_in_front(tmp_path, port) as (v1, v2):
            for proxy_port in (v1, v2):
                assert await where(proxy_port, f"near{proxy_port}", local_host="127.0.0.5") == "TS01"
                assert await where(proxy_port, f"far{proxy_port}", local_host="127.0.0.6") == "TS02"
            clients = {d["user"]: d["client"] for d in bal.ctx.decisions}
            assert clients == {f"near{v1}": "127.0.0.5", f"far{v1}": "127.0.0.6",
                               f"near{v2}": "127.0.0.5", f"far{v2}": "127.0.0.6"}
    for s in farm:
        await s.stop()


async def test_a_real_haproxy_that_is_not_trusted_gets_nothing_through(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    async with running(config(farm, tmp_path, 0, "127.0.0.99/32")) as bal:
        port = bal.addresses[0][1]
        with haproxy_in_front(tmp_path, port) as (v1, _v2):
            with pytest.raises((ConnectionError, OSError, EOFError)):
                await where(v1, "spoofed", local_host="127.0.0.6")
            assert bal.view.stats().refused["untrusted-proxy"] >= 1  # HAProxy retries a refused connect
            assert not bal.ctx.decisions
    for s in farm:
        await s.stop()
