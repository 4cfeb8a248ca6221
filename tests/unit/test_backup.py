"""backup = true: a hot spare takes new users only while no other server of the pool can take
them (down, maint, drain, full, weight 0, refusing logons); its users keep it while it holds
their session; several backups share by weight."""

from __future__ import annotations

from collections import Counter

import pytest

from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.model import AdminState, BalanceKind, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyTable

TS01, TS02 = Server("TS01", "127.0.0.1", 3391), Server("TS02", "127.0.0.1", 3392)
SPARE1, SPARE2 = Server("SPARE1", "127.0.0.1", 3401), Server("SPARE2", "127.0.0.1", 3402)


def new_router(*, cap: int | None = None, weight: int = 1, spare_weights: tuple[int, ...] = (1,)) -> Router:
    members = [PoolMember(TS01, weight, cap), PoolMember(TS02, weight, cap)]
    members += [PoolMember(s, w, None, backup=True) for s, w in zip((SPARE1, SPARE2), spare_weights, strict=False)]
    pool = Pool("default", BalanceKind.LEASTCONN, tuple(members))
    return Router(RoutingPolicy((pool,), failover_after_s=0.0), StickyTable(ttl_s=3600.0, max_entries=1000))


def place(r: Router, user: str, now: float = 0.0) -> Server:
    d = r.decide(RouteRequest("10.0.0.1", user), now)
    assert d.server is not None, d
    r.assign(d, d.server, now)
    r.opened(d.server)
    return d.server


def test_a_backup_takes_nobody_while_another_server_can() -> None:
    r = new_router()
    assert {place(r, f"u{i}") for i in range(20)} == {TS01, TS02}
    assert not r.on_backup(r.policy.pools[0], 0.0)


def down(r: Router, now: float) -> None:
    r.set_health("TS01", False, now)
    r.set_health("TS02", False, now)


def maint(r: Router, now: float) -> None:
    r.set_admin_state("TS01", AdminState.MAINT, now)
    r.set_admin_state("TS02", AdminState.MAINT, now)


def drain(r: Router, now: float) -> None:
    r.set_admin_state("TS01", AdminState.DRAIN, now)
    r.set_admin_state("TS02", AdminState.MAINT, now)


@pytest.mark.parametrize(("cause", "word"), [(down, "down"), (maint, "maint"), (drain, "drain")])
def test_a_backup_takes_new_users_once_no_other_server_can(cause, word) -> None:  # type: ignore[no-untyped-def]
    r = new_router()
    cause(r, 1.0)
    d = r.decide(RouteRequest("10.0.0.1", "newcomer"), 2.0)
    assert d.reason is Reason.NEW and d.candidates == (SPARE1,)
    assert "backup: no other server of pool default takes new users" in d.detail and f"TS01 {word}" in d.detail
    assert r.on_backup(r.policy.pools[0], 2.0)


def test_a_backup_takes_new_users_when_the_others_are_full() -> None:
    r = new_router(cap=2)
    placed = [place(r, f"u{i}") for i in range(6)]
    assert placed[:4].count(SPARE1) == 0 and placed[4:] == [SPARE1, SPARE1]
    assert "TS01 full 2/2" in r.decide(RouteRequest("10.0.0.1", "x"), 0.0).detail


def test_a_backup_takes_new_users_when_the_others_weigh_0() -> None:
    assert place(new_router(weight=0), "u") == SPARE1


def test_no_backup_and_no_server_is_still_no_server() -> None:
    r = new_router(spare_weights=())
    down(r, 1.0)
    assert r.decide(RouteRequest("10.0.0.1", "u"), 2.0).reason is Reason.NO_SERVER


def test_every_server_full_backups_included_is_full() -> None:
    members = (PoolMember(TS01, 1, 1), PoolMember(SPARE1, 1, 1, backup=True))
    pool = Pool("default", BalanceKind.LEASTCONN, members)
    r = Router(RoutingPolicy((pool,)), StickyTable(ttl_s=3600.0, max_entries=100))
    assert place(r, "a") == TS01 and place(r, "b") == SPARE1
    d = r.decide(RouteRequest("10.0.0.1", "c"), 0.0)
    assert d.reason is Reason.FULL and "TS01 1/1" in d.detail and "SPARE1 1/1" in d.detail


def test_users_placed_on_a_backup_keep_it_when_the_others_return() -> None:
    r = new_router()
    down(r, 1.0)
    assert place(r, "alice", 2.0) == SPARE1
    r.set_health("TS01", True, 10.0)
    r.set_health("TS02", True, 10.0)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), 11.0)
    assert d.reason is Reason.STICKY_HIT and d.server == SPARE1  # her session lives there
    assert place(r, "bob", 11.0) in (TS01, TS02)  # new users: the primaries again


def test_several_backups_share_by_weight() -> None:
    r = new_router(spare_weights=(1, 3))
    down(r, 1.0)
    placed = Counter(place(r, f"u{i}", 2.0).name for i in range(40))
    assert placed == {"SPARE1": 10, "SPARE2": 30}


def test_a_failover_from_a_down_server_prefers_a_primary() -> None:
    r = new_router()
    assert place(r, "alice") == TS01
    r.set_health("TS01", False, 1.0)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), 2.0)
    assert d.reason is Reason.FAILOVER and d.candidates == (TS02,)  # not the spare: TS02 can take her
