"""max_sessions: a server at its cap takes no new user; its own users still reach it; when every
server is full the new user is refused as `full`, with the usage in the detail."""

from __future__ import annotations

from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.model import BalanceKind, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyTable

S1, S2 = Server("TS01", "127.0.0.1", 3391), Server("TS02", "127.0.0.1", 3392)


def router(caps: tuple[int | None, int | None], balance: BalanceKind = BalanceKind.LEASTCONN) -> Router:
    pool = Pool("default", balance, (PoolMember(S1, 1, caps[0]), PoolMember(S2, 1, caps[1])))
    return Router(RoutingPolicy((pool,)), StickyTable(ttl_s=3600.0, max_entries=100))


def connect(r: Router, user: str, now: float = 0.0) -> Server:
    d = r.decide(RouteRequest(client_host="10.0.0.1", user_key=user), now)
    assert d.server is not None, d
    r.assign(d, d.server, now)
    r.opened(d.server)
    return d.server


def test_a_server_at_its_cap_takes_no_new_user_but_keeps_its_own() -> None:
    r = router((2, None))
    placed = [connect(r, f"u{i}") for i in range(6)]
    assert placed.count(S1) == 2  # then TS01 is full: the rest go to TS02
    alice = next(f"u{i}" for i, s in enumerate(placed) if s == S1)
    d = r.decide(RouteRequest(client_host="10.0.0.1", user_key=alice), 1.0)
    assert d.reason is Reason.STICKY_HIT and d.server == S1  # her session is there: never stranded


def test_when_every_server_is_full_the_new_user_is_refused_as_full() -> None:
    r = router((1, 2))
    for i in range(3):
        connect(r, f"u{i}")
    d = r.decide(RouteRequest(client_host="10.0.0.1", user_key="late"), 1.0)
    assert d.reason is Reason.FULL and not d.candidates
    assert "TS01 1/1" in d.detail and "TS02 2/2" in d.detail and "connections" in d.detail
    r.closed(S2)  # one leaves: room again
    assert r.decide(RouteRequest(client_host="10.0.0.1", user_key="late"), 2.0).server == S2


def test_leastsessions_counts_sessions_against_the_cap() -> None:
    r = router((1, None), BalanceKind.LEASTSESSIONS)
    r.table.assign("held", "default", "TS01", 0.0)  # a disconnected session on TS01: it counts
    for i in range(3):
        assert r.decide(RouteRequest(client_host="10.0.0.1", user_key=f"n{i}"), 1.0).server == S2


def test_a_full_server_is_no_fallback_for_a_failed_connect() -> None:
    r = router((1, None))
    connect(r, "u0")  # TS01 is now full
    d = r.decide(RouteRequest(client_host="10.0.0.1", user_key="next"), 1.0)
    assert d.candidates == (S2,)  # the attempts of a new user never include a full server
