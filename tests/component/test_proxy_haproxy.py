"""A real HAProxy in front, sending PROXY v1 and v2 headers: the balancer sees the real client.

HAProxy (the Debian package, also the benchmarks' reference) listens on 127.0.0.1 and forwards
to a `proxy_protocol = true` listener with `send-proxy` / `send-proxy-v2`; clients connect from
127.0.0.5 and 127.0.0.6, and a `sources` route sends 127.0.0.6 to its own pool. Through the
proxy, the balancer's decisions must name the clients, not HAProxy."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.balancer import free_port, running, wait_for_listener
from tests.support.fakes import FakeRdpServer, start_farm, where

HAPROXY_CFG = """\
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{v1_port}
    default_backend v1
backend v1
    server rdpb 127.0.0.1:{target} send-proxy
frontend v2
    bind 127.0.0.1:{v2_port}
    default_backend v2
backend v2
    server rdpb 127.0.0.1:{target} send-proxy-v2
"""


@contextmanager
def haproxy(workdir: Path, target: int) -> Iterator[tuple[int, int]]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (scripts/install-test-deps.sh installs it)", pytrace=False)
    v1_port, v2_port = free_port(), free_port()
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(v1_port=v1_port, v2_port=v2_port, target=target))
    log = workdir / "haproxy.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_listener(proc, ("127.0.0.1", v1_port), log, 10)
        wait_for_listener(proc, ("127.0.0.1", v2_port), log, 10)
        yield v1_port, v2_port
    finally:
        proc.terminate()
        proc.wait(10)


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
    port = free_port()
    async with running(config(farm, tmp_path, port, "127.0.0.1/32")) as bal:
        with haproxy(tmp_path, port) as (v1, v2):
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
    port = free_port()
    async with running(config(farm, tmp_path, port, "127.0.0.99/32")) as bal:
        with haproxy(tmp_path, port) as (v1, _v2):
            with pytest.raises((ConnectionError, OSError, EOFError)):
                await where(v1, "spoofed", local_host="127.0.0.6")
            assert bal.stats().refused["untrusted-proxy"] >= 1  # HAProxy retries a refused connect
            assert not bal.ctx.decisions
    for s in farm:
        await s.stop()
