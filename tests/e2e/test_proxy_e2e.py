"""End-to-end: real xfreerdp -> real HAProxy (send-proxy-v2) -> rdpbalancer on a PROXY protocol
listener -> three real xrdp servers.

HAProxy connects to the balancer from 127.0.0.3, the only trusted proxy; the clients connect to
HAProxy from 127.0.0.1. So the balancer's peer is 127.0.0.3, and the client address it records
(in the admin API's sessions) can only be 127.0.0.1 if it took it from the PROXY header. The
sessions must be whole RDP logons through both proxies, spread by leastconn, and sticky."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.support.haproxy import haproxy_in_front

pytestmark = pytest.mark.e2e

PASSWORD = "secret"
PROXY_SOURCE = "127.0.0.3"
USERS = ("pp-alice", "pp-bob", "pp-carol")


def _sessions(admin_port: int) -> list[dict[str, Any]]:
    url = f"http://{harness.LOCALHOST}:{admin_port}/api/v1/sessions"
    with urllib.request.urlopen(url, timeout=5.0) as response:
        return [s for s in json.load(response)["sessions"] if s["state"] == "relay"]


def test_rdp_through_a_real_haproxy_with_proxy_protocol(
        tmp_path: Path, xrdp_farm: harness.XrdpFarm, run_clients: Callable[..., list[harness.ClientResult]],
        hostname: Callable[[str], str]) -> None:
    balancer = harness.make_balancer(tmp_path / "balancer", xrdp_farm.servers, start=False)
    admin_port = harness.held_port()
    text = balancer.config_path.read_text()
    listen = f'listen = ["{balancer.host}:{balancer.port}"]'
    assert text.count(listen) == 1 and text.count('listen = "127.0.0.1:0"') == 1
    text = text.replace(listen, f'listen = [{{ address = "{balancer.host}:{balancer.port}", proxy_protocol = true }}]\n'
                                f'trusted_proxies = ["{PROXY_SOURCE}/32"]')
    balancer.config_path.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{admin_port}"'))
    balancer.start()
    try:
        with haproxy_in_front(tmp_path / "haproxy", balancer.port, sends=("send-proxy-v2",),
                              source=PROXY_SOURCE) as (front,):
            specs = [harness.ClientSpec(harness.LOCALHOST, front, user, PASSWORD, hostname(user)) for user in USERS]
            try:
                first = run_clients(specs)
            except harness.ClientConnectError as exc:
                pytest.fail(f"{exc}\nbalancer log:\n{balancer.log_tail(60)}", pytrace=False)
            homes = {c.user: c.server for c in first}
            assert sorted(homes.values()) == sorted(s.name for s in xrdp_farm.servers), homes  # leastconn: one each
            sessions = harness.wait_for(lambda: s if len(s := _sessions(admin_port)) == len(USERS) else None,
                                        timeout=10.0, what="the balancer's sessions")
            for session in sessions:
                assert session["client"].rsplit(":", 1)[0] == harness.LOCALHOST, session  # from the header
                assert session["server"] == homes[session["user"]], session
            for client in first:
                client.close()
            again = run_clients([harness.ClientSpec(harness.LOCALHOST, front, u, PASSWORD, hostname(u))
                                 for u in USERS])
            assert {c.user: c.server for c in again} == homes  # sticky through both proxies
    finally:
        balancer.close()
