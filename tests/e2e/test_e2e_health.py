"""End-to-end: health checks and the down-server policy, with real xrdp servers and real xfreerdp.

One xrdp of the session farm is stopped (its port released) and started again on the same port;
the balancer must notice both with its real X.224 checks, hold the sticky user of the dead server
until ``failover_after``, then move them, and take new users on the server once it is back.
The farm is whole again after the test, even when it fails (``xrdp_outage``).
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest

from tests.e2e import harness

pytestmark = pytest.mark.e2e

PASSWORD = "secret"
USERS = ("alice", "bob", "carol")

CHECK_INTERVAL_S = 0.2
FAILOVER_AFTER_S = 3.0
HEALTH_TOML = f"""
[health]
check = "rdp"
interval = "{CHECK_INTERVAL_S * 1000:.0f}ms"
timeout = "1s"
rise = 2
fall = 2
failover_after = "{FAILOVER_AFTER_S:g}s"
"""
# Deadlines, generous against a loaded CI machine: with these settings a state change takes
# about fall (or rise) * interval, 0.4 s, and the first checks run within one interval of the start.
STATE_CHANGE_TIMEOUT_S = 10.0
# A client the balancer turns away exits within a second; this only bounds a hang.
REFUSED_CLIENT_TIMEOUT_S = 5.0
# Past failover_after by this much before alice retries. Times come from the balancer's own log
# (wall clock, as its policy): this only absorbs the millisecond rounding of the log.
FAILOVER_MARGIN_S = 0.1
# A crash: the port closes at once. On SIGTERM xrdp takes a variable time to exit (and may stop
# answering before it does), which blurs the measured detection time and eats into the hold window.
STOP_SIGNAL = signal.SIGKILL
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

RunClient = Callable[..., harness.ClientResult]
RunClients = Callable[..., list[harness.ClientResult]]
Outage = Callable[..., contextlib.AbstractContextManager[harness.XrdpServer]]


class BalancerLog:
    """The balancer's log, read from a mark on: what happened since a given step."""

    def __init__(self, balancer: harness.BalancerProcess) -> None:
        self.balancer = balancer
        self.mark = 0

    def lines(self) -> list[str]:
        return harness.complete_lines(self.balancer.log_path)

    def since_mark(self) -> list[str]:
        return self.lines()[self.mark :]

    def set_mark(self) -> None:
        self.mark = len(self.lines())

    def wait_for(self, pattern: str, what: str, timeout: float = STATE_CHANGE_TIMEOUT_S) -> str:
        regex = re.compile(pattern)

        def probe() -> str | None:
            return next((line for line in self.since_mark() if regex.search(line)), None)

        try:
            return harness.wait_for(probe, timeout=timeout, what=what, check=self._check_running)
        except harness.HarnessError as exc:
            message = f"{exc}\nbalancer log:\n{self.balancer.log_tail()}"
        pytest.fail(message, pytrace=False)  # outside the except: no chained traceback

    def _check_running(self) -> None:
        assert self.balancer.process is not None
        self.balancer.process.ensure_running()

    def tail(self) -> str:
        return f"\nbalancer log:\n{self.balancer.log_tail()}"


def _log_time(line: str) -> float:
    """The wall-clock time of a balancer log line (``2026-11-25T22:40:17.183Z LEVEL ...``)."""
    stamp = datetime.strptime(line.split(" ", 1)[0], LOG_TIME_FORMAT).replace(tzinfo=UTC)
    return stamp.timestamp()


def _state_change(server: str, old: str, new: str) -> str:
    return rf" rdpbalancer\.health server {re.escape(server)} {old} -> {new} "


def _field(line: str, name: str) -> str | None:
    match = re.search(rf" {name}=(\S+)", line)
    return match.group(1) if match else None


def _routes(lines: Sequence[str], user: str) -> list[tuple[str | None, str | None, str | None]]:
    """(server, reason, moved_from) of every `routed` line of ``user``."""
    return [
        (_field(line, "server"), _field(line, "reason"), _field(line, "moved_from"))
        for line in lines
        if " routed " in line and f' user="{user}" ' in line
    ]


def _connect_all(
    balancer: harness.BalancerProcess, run_clients: RunClients, users: Sequence[str],
    hostname: Callable[[str], str],
) -> list[harness.ClientResult]:
    """The users' clients all at once (overlapping start-ups); each must reach a server."""
    specs = [harness.ClientSpec(balancer.host, balancer.port, u, PASSWORD, hostname(u)) for u in users]
    try:
        return run_clients(specs)
    except harness.ClientConnectError as exc:
        message = f"{exc}\nbalancer log:\n{balancer.log_tail()}"
    pytest.fail(message, pytrace=False)


def _close(clients: Sequence[harness.ClientResult]) -> None:
    for client in clients:
        assert client.alive, f"{client.client_hostname} dropped:\n{client.output()}"
        client.close()


def test_health_down_hold_failover_and_recovery(
    xrdp_farm: harness.XrdpFarm,
    xrdp_outage: Outage,
    balancer_factory: Callable[..., harness.BalancerProcess],
    run_client: RunClient,
    run_clients: RunClients,
    hostname: Callable[[str], str],
    which_server: Callable[[str], str | None],
) -> None:
    balancer = balancer_factory(extra_toml=HEALTH_TOML)
    log = BalancerLog(balancer)
    for server in xrdp_farm.servers:  # the real X.224 check passes against a real xrdp
        log.wait_for(_state_change(server.name, "unknown", "up"), f"{server.name} checked up")

    # 1. three users, spread over the three servers by leastconn (arrivals overlap: each decision
    #    counts the connections still opening), then gone; their sticky entries stay.
    first = _connect_all(balancer, run_clients, USERS, hostname)
    placed = {c.user: c.server for c in first}
    assert len(set(placed.values())) == 3, f"three users should be spread over three servers: {placed}"
    _close(first)
    old = placed["alice"]

    log.set_mark()
    stop_started = time.time()
    with xrdp_outage(old, STOP_SIGNAL) as stopped:
        # 2. alice's server dies: the checks take it down.
        stop_s = time.time() - stop_started
        down_line = log.wait_for(_state_change(old, "up", "down"), f"{old} to be marked down")
        down_at = _log_time(down_line)
        print(f"\n{old} killed (stopped in {stop_s:.2f}s) -> marked down {down_at - stop_started:.2f}s"
              f" after the kill: {down_line}")

        # 3. within failover_after: alice is held on her dead server (turned away, entry kept);
        #    bob and carol still reach their own servers.
        log.set_mark()
        alice_name = hostname("alice")
        alice: harness.ClientResult | None = None
        with contextlib.suppress(harness.ClientConnectError):
            alice = run_client(balancer.host, balancer.port, "alice", PASSWORD, alice_name,
                               timeout=REFUSED_CLIENT_TIMEOUT_S)
        lines = log.since_mark()
        alice_lines = [line for line in lines if 'user="alice"' in line]
        late = [line for line in alice_lines if _log_time(line) - down_at >= FAILOVER_AFTER_S]
        assert not late, "too slow to test the hold window: alice came after failover_after" + log.tail()
        assert alice is None, f"alice reached {alice.server} while {old} was down < failover_after" + log.tail()
        assert which_server(alice_name) is None
        assert _routes(lines, "alice") == [], "alice must not be routed anywhere yet" + log.tail()
        assert any(f"connect to {old} ({stopped.address}) failed" in line for line in lines), (
            f"alice should have been sent to {old} (held there) and failed" + log.tail()
        )
        assert any("reason=connect-failed" in line for line in alice_lines), log.tail()

        others = _connect_all(balancer, run_clients, ("bob", "carol"), hostname)
        assert {c.user: c.server for c in others} == {u: placed[u] for u in ("bob", "carol")}
        _close(others)

        # 4. past failover_after: alice is moved to a healthy server; bob and carol stay put.
        #    (A deadline the policy sets, not a wait for an event.)
        time.sleep(max(0.0, down_at + FAILOVER_AFTER_S + FAILOVER_MARGIN_S - time.time()))
        log.set_mark()
        moved = _connect_all(balancer, run_clients, USERS, hostname)  # kept open for step 5
        now_on = {c.user: c.server for c in moved}
        assert now_on["alice"] != old and now_on["alice"] in placed.values(), now_on
        assert {u: now_on[u] for u in ("bob", "carol")} == {u: placed[u] for u in ("bob", "carol")}
        alice_routes = _routes(log.since_mark(), "alice")
        assert alice_routes == [(now_on["alice"], "failover", old)], (
            f"alice's route after failover_after: {alice_routes}" + log.tail()
        )

        # 5. the server comes back on its port: the checks bring it up (rise), and it takes new
        #    users. alice, bob and carol stay connected on the other two, so it is the only idle
        #    server and leastconn must pick it for the first of the two new users. alice, back
        #    with a second connection, stays where she was moved: her session is there now.
        log.set_mark()
        restart_started = time.time()
        xrdp_farm.start_server(old)
        listening_s = time.time() - restart_started
        up_line = log.wait_for(_state_change(old, "down", "up"), f"{old} to be marked up again")
        print(f"{old} restarted (listening in {listening_s:.2f}s) -> marked up"
              f" {_log_time(up_line) - restart_started:.2f}s after the start: {up_line}")

        log.set_mark()
        alice_again, *newcomers = _connect_all(balancer, run_clients, ("alice", "dave", "erin"), hostname)
        landed = {c.user: c.server for c in newcomers}
        assert old in landed.values(), f"new users {landed} avoided {old}, idle and up again" + log.tail()
        assert alice_again.server == now_on["alice"], (
            f"alice went to {alice_again.server}, her entry says {now_on['alice']}" + log.tail()
        )
        assert _routes(log.since_mark(), "alice") == [(now_on["alice"], "sticky-hit", None)], log.tail()
        _close([*moved, alice_again, *newcomers])

    assert "Traceback" not in balancer.log_path.read_text(), log.tail()
