"""End-to-end: real xfreerdp clients through the balancer to three real xrdp servers.

"Connected" = the client got through X.224 negotiation and TLS to a server, proven by that server
logging ``Connected client computer name: NAME`` (see tests/e2e/harness.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.e2e import harness
from tests.support.balancer import refused_port

pytestmark = pytest.mark.e2e

T = TypeVar("T")

PASSWORD = "secret"
USERS = ("alice", "bob", "carol")

RunClient = Callable[..., harness.ClientResult]
RunClients = Callable[..., list[harness.ClientResult]]

# --------------------------------------------------------------------------- harness canaries


def test_harness_selftest(
    xrdp_farm: harness.XrdpFarm,
    run_clients: RunClients,
    hostname: Callable[[str], str],
    which_server: Callable[[str], str | None],
) -> None:
    """Direct connections to each xrdp, held open together, are found in that server's log only."""
    specs = [
        harness.ClientSpec(server.host, server.port, "selftest", PASSWORD, hostname(f"self-{server.name}"))
        for server in xrdp_farm.servers
    ]
    clients = run_clients(specs)
    for server, client in zip(xrdp_farm.servers, clients, strict=True):
        assert client.server == server.name, client.output()
    for client in clients:
        assert client.alive, f"{client.client_hostname} dropped:\n{client.output()}"
        assert which_server(client.client_hostname) == client.server
        client.close()
        assert not client.alive
    assert which_server("never-seen") is None


def test_harness_reports_a_client_that_reaches_no_server(
    run_client: RunClient, hostname: Callable[[str], str]
) -> None:
    with refused_port(harness.LOCALHOST) as closed_port, \
            pytest.raises(harness.ClientConnectError, match="reached no xrdp server"):
        run_client(harness.LOCALHOST, closed_port, "nobody", PASSWORD, hostname("refused"), timeout=10.0)


# --------------------------------------------------------------------------- the balancer


def _with_balancer_log(balancer: harness.BalancerProcess, action: Callable[[], T]) -> T:
    """Run ``action``; a client that reaches no server fails the test with the balancer's log."""
    try:
        return action()
    except harness.ClientConnectError as exc:
        message = f"{exc}\nbalancer log:\n{balancer.log_tail()}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


def _connect(
    balancer: harness.BalancerProcess, run_client: RunClient, user: str, name: str
) -> harness.ClientResult:
    return _with_balancer_log(
        balancer, lambda: run_client(balancer.host, balancer.port, user, PASSWORD, name)
    )


def _placement_scenario(
    balancer: harness.BalancerProcess, run_client: RunClient, hostname: Callable[[str], str]
) -> dict[str, str]:
    """alice, bob, alice again (first still open), carol; returns user -> server."""
    alice_1 = _connect(balancer, run_client, "alice", hostname("alice"))
    bob = _connect(balancer, run_client, "bob", hostname("bob"))
    assert bob.server != alice_1.server, "leastconn: alice holds a connection there, bob must go elsewhere"

    alice_2 = _connect(balancer, run_client, "alice", hostname("alice"))
    assert alice_1.alive, f"alice's first connection dropped:\n{alice_1.output()}"
    assert alice_2.server == alice_1.server, "sticky: alice's second connection must join her first"

    carol = _connect(balancer, run_client, "carol", hostname("carol"))
    assert carol.server not in {alice_1.server, bob.server}, (
        "leastconn: carol must go to the idle third server"
    )

    for client in (alice_1, bob, alice_2, carol):
        assert client.alive, f"{client.client_hostname} dropped:\n{client.output()}"
        client.close()
    return {"alice": alice_1.server, "bob": bob.server, "carol": carol.server}


def _reconnect_all(
    balancer: harness.BalancerProcess, run_clients: RunClients, hostname: Callable[[str], str]
) -> dict[str, str]:
    """Each user once more, all at the same time (placement must come from the sticky table)."""
    specs = [
        harness.ClientSpec(balancer.host, balancer.port, user, PASSWORD, hostname(user)) for user in USERS
    ]
    clients = _with_balancer_log(balancer, lambda: run_clients(specs))
    for client in clients:
        client.close()
    return {client.user: client.server for client in clients}


@pytest.mark.parametrize("restart_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_core_leastconn_sticky_and_restart(
    restart_signal: signal.Signals,
    balancer_factory: Callable[..., harness.BalancerProcess],
    run_client: RunClient,
    run_clients: RunClients,
    hostname: Callable[[str], str],
) -> None:
    balancer = balancer_factory()
    placed = _placement_scenario(balancer, run_client, hostname)
    assert len(set(placed.values())) == 3, f"three users should be spread over three servers: {placed}"

    code = balancer.stop(restart_signal)
    if restart_signal == signal.SIGTERM:
        assert code == 0, f"balancer exit status {code} on SIGTERM:\n{balancer.log_tail()}"
    balancer.start()

    again = _reconnect_all(balancer, run_clients, hostname)
    assert again == placed, (
        f"after a {restart_signal.name} restart users landed on {again}, before on {placed}"
        f"\nbalancer log:\n{balancer.log_tail()}"
    )
