"""Transparent mode's parts that need no namespace: the source address rule, the configuration,
the start-up check. The mode end to end, with real routing: tests/component/test_transparent.py."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from rdpbalancer import transparent
from rdpbalancer.admin.views import servers as server_rows
from rdpbalancer.config import ConfigError, parse_config
from rdpbalancer.config.compile import compile_config
from rdpbalancer.transparent import TransparentError, source_for
from tests.support.balancer import farm_config, running
from tests.support.fakes import rdp_connect

V4, V6 = socket.AF_INET, socket.AF_INET6


@pytest.mark.parametrize(("client", "family", "source"), [
    ("10.1.0.5", V4, "10.1.0.5"),
    ("::ffff:10.1.0.5", V4, "10.1.0.5"),  # an IPv4 client on a dual-stack listener
    ("2001:db8::5", V6, "2001:db8::5"),
    ("fe80::1%eth0", V6, "fe80::1%eth0"),
    ("2001:db8::5", V4, None),  # no IPv4 address to come from: the balancer's own
    ("10.1.0.5", V6, None),
    ("unknown", V4, None),  # no peer address (a PROXY LOCAL header)
    ("unknown", V6, None),
    ("::FFFF:10.1.0.5", V4, "10.1.0.5"),
    ("::ffff:10.1.0.5", V6, None),  # an IPv4 client cannot be the source towards an IPv6 server
    ("10.1.0", V4, None),  # not an address
    ("2001:db8::zz", V6, None),
])
def test_the_source_is_the_client_address_of_the_server_family(client: str, family: int, source: str | None) -> None:
    assert source_for(client, family) == source


def pools(text: str) -> str:
    return f"""
[balancer]
listen = ["127.0.0.1:3389"]
{text}
"""


def test_the_mode_is_the_server_own_else_the_first_pool_that_lists_it() -> None:
    config = parse_config(pools("""
[[pool]]
name = "a"
transparent = true
servers = [{ name = "S1", address = "10.0.0.1:3389" }, { name = "S2", address = "10.0.0.2:3389", transparent = false },
           { name = "S3", address = "10.0.0.3:3389" }]
[[pool]]
name = "b"
servers = [{ name = "S3", address = "10.0.0.3:3389" }, { name = "S4", address = "10.0.0.4:3389", transparent = true },
           { name = "S5", address = "10.0.0.5:3389" }]
"""))
    assert compile_config(config).relay.transparent == frozenset({"S1", "S3", "S4"})


def test_off_unless_asked() -> None:
    config = parse_config(pools('[[pool]]\nname = "a"\nservers = [{ name = "S1", address = "10.0.0.1:3389" }]\n'))
    assert compile_config(config).relay.transparent == frozenset()


def test_a_value_that_is_not_a_boolean_is_refused_with_its_place() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(pools('[[pool]]\nname = "a"\ntransparent = "yes"\n'
                           'servers = [{ name = "S1", address = "10.0.0.1:3389" }]\n'))
    assert "transparent" in str(err.value) and "pool" in str(err.value)


def test_no_capability_is_one_error_naming_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transparent, "capability_problem", lambda: "no CAP_NET_ADMIN")
    with pytest.raises(TransparentError, match=r"transparent = true \(servers S1, S2\): no CAP_NET_ADMIN"):
        transparent.require({"S2", "S1"})
    transparent.require(set())  # off: nothing is checked


def test_root_may_open_sockets_from_a_foreign_address() -> None:
    assert transparent.capability_problem() is None  # the test suite runs as root (.ci/run)


async def test_a_transparent_server_sees_the_client_address_on_loopback(tmp_path: Path) -> None:
    """On loopback every 127/8 address is this machine's, so no routing is needed: the plumbing
    from the session to the bind, the log line and the metric."""
    seen: list[str] = []

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername")[0])
        from rdpbalancer.proto import PROTOCOL_SSL, build_connection_confirm  # noqa: PLC0415

        await reader.read(4096)
        writer.write(build_connection_confirm(PROTOCOL_SSL))
        await reader.read(4)
        writer.write(b"H1\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(host, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    text = farm_config([("H1", f"127.0.0.1:{port}", 1)], tmp_path / "s.db").replace(
        'name = "default"', 'name = "default"\ntransparent = true')
    async with server, running(text) as balancer:
        client = await rdp_connect(balancer.addresses[0][1], "alice", local_host="127.0.0.3")
        await client.close()
        stats = balancer.view.stats()
        servers = server_rows(balancer.view)
    assert seen == ["127.0.0.3"]
    assert [(s["name"], s["transparent"]) for s in servers] == [("H1", True)]  # the API says so
    assert stats.backend_sources["client"] == 1
