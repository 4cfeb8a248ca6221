"""Slow start with a fake clock: the ramp's shape, what starts a ramp, what it changes (new users
only), and how a reload treats a ramp under way."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from rdpbalancer.policy import slowstart
from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.model import AdminState, BalanceKind, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyTable

S1, S2, S3 = (Server(f"TS0{i}", "127.0.0.1", 3390 + i) for i in (1, 2, 3))
WINDOW = 60.0


def policy(window: float = WINDOW, balance: BalanceKind = BalanceKind.LEASTCONN,
           members: tuple[PoolMember, ...] | None = None) -> RoutingPolicy:
    members = members or tuple(PoolMember(s, 1) for s in (S1, S2, S3))
    windows = {m.server.name: window for m in members} if window else {}
    return RoutingPolicy((Pool("default", balance, members),), slowstart=windows)


def new_router(window: float = WINDOW, balance: BalanceKind = BalanceKind.LEASTCONN) -> Router:
    return Router(policy(window, balance), StickyTable(ttl_s=86400.0, max_entries=10_000))


def connect(r: Router, user: str, now: float) -> Server:
    d = r.decide(RouteRequest(client_host="10.0.0.1", user_key=user), now)
    assert d.server is not None, d
    r.assign(d, d.server, now)
    r.opened(d.server)
    return d.server


def restart(r: Router, server: Server, down_at: float, up_at: float) -> None:
    """The host goes down (its sessions with it) and comes back empty."""
    r.set_health(server.name, False, down_at)
    while r.connections[server.name]:
        r.closed(server)
    assert r.set_health(server.name, True, up_at)  # it begins to take new users: a ramp


# -- the shape ---------------------------------------------------------------------------------------


def test_the_ramp_goes_from_a_small_share_to_the_whole_weight_linearly() -> None:
    assert slowstart.share(100.0, 60.0, 100.0) == slowstart.MIN_SHARE
    assert slowstart.share(100.0, 60.0, 101.0) == slowstart.MIN_SHARE  # 1.7 % < the floor
    assert slowstart.share(100.0, 60.0, 115.0) == pytest.approx(0.25)
    assert slowstart.share(100.0, 60.0, 130.0) == pytest.approx(0.5)
    assert slowstart.share(100.0, 60.0, 160.0) == 1.0
    assert slowstart.share(100.0, 60.0, 1e9) == 1.0
    assert slowstart.share(None, 60.0, 100.0) == 1.0  # no ramp
    assert slowstart.share(100.0, 0.0, 100.0) == 1.0  # slowstart off


def test_a_reload_that_changes_the_window_keeps_the_progress() -> None:
    start = slowstart.rebase(100.0, 60.0, 120.0, 130.0)  # halfway, then a window twice as long
    assert start is not None
    assert slowstart.share(start, 120.0, 130.0) == pytest.approx(0.5)  # no jump
    assert slowstart.share(start, 120.0, 160.0) == pytest.approx(0.75)  # and slower from there
    assert slowstart.rebase(100.0, 0.0, 60.0, 130.0) == 70.0  # slowstart switched on: already over
    assert slowstart.rebase(None, 60.0, 120.0, 130.0) is None


# -- the 9:00 storm ------------------------------------------------------------------------------


def storm(r: Router, t0: float, users: int, over_s: float, window: float) -> list[Server]:
    """`users` new users, evenly over `over_s` seconds from t0, each staying connected. After each
    one, the fresh TS03 holds no more than its ramped share of the load of its busiest peer."""
    placed = []
    for i in range(users):
        now = t0 + over_s * i / users
        placed.append(connect(r, f"new{i}", now))
        if window:
            share = slowstart.share(t0, window, now)
            busiest = max(r.connections[S1.name], r.connections[S2.name])
            assert r.connections[S3.name] <= share * busiest + 1, (i, now, dict(r.connections))
    return placed


def test_a_restarted_host_takes_its_ramped_share_of_a_logon_storm_not_all_of_it() -> None:
    """Three servers, one restarted empty, 90 new users in its window: the fresh one takes no more
    than its ramped share. Without slow start it takes the first 20 and about half of the storm."""
    results = {}
    for window in (0.0, WINDOW):
        r = new_router(window)
        for i in range(60):  # a working morning: 20 users on each server
            connect(r, f"old{i}", 0.0)
        restart(r, S3, 1000.0, 1010.0)  # TS03 reboots: its 20 sessions are gone
        results[window] = storm(r, 1010.0, 90, 30.0, window)  # 90 new users in the window's first half
    without, ramped = (Counter(s.name for s in results[w]) for w in (0.0, WINDOW))
    first_30 = Counter(s.name for s in results[WINDOW][:30])
    assert all(s == S3 for s in results[0.0][:20]) and without["TS03"] >= 40  # the storm lands on one host
    assert ramped["TS03"] <= 27, ramped  # its share reaches 49 % at the last user: 0.49 * 52 + 1
    assert first_30["TS03"] <= 5, first_30  # the first 10 s: a share of 5-17 %
    print(f"\nslow start distribution (90 new users over 30 s of a 60 s window, 20 users on each peer): "
          f"without {dict(sorted(without.items()))}, with {dict(sorted(ramped.items()))}; "
          f"first 30 users with slow start: {dict(sorted(first_30.items()))}")


def test_after_the_window_the_fresh_host_catches_up_at_full_weight() -> None:
    r = new_router()
    for i in range(60):
        connect(r, f"old{i}", 0.0)
    restart(r, S3, 1000.0, 1010.0)
    assert r.ramp(S3.name, 1070.0) is None  # over
    placed = [connect(r, f"late{i}", 1070.0) for i in range(10)]
    assert placed.count(S3) == 10  # plain least-connections again: the emptiest takes them


def test_sticky_and_routing_token_users_reach_a_ramping_host_at_once() -> None:
    r = new_router()
    r.table.assign("alice", "default", S3.name, 0.0)  # a disconnected session survived on TS03
    restart(r, S3, 1000.0, 1001.0)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), 1001.0)
    assert d.reason is Reason.STICKY_HIT and d.server == S3
    d = r.decide(RouteRequest("10.0.0.1", None, msts_target=(S3.host, S3.port)), 1001.0)
    assert d.reason is Reason.ROUTING_TOKEN and d.server == S3


def test_what_starts_a_ramp() -> None:
    r = new_router()
    assert r.ramp(S1.name, 0.0) is None  # a balancer that starts finds its servers as they are
    assert r.set_admin_state(S1.name, AdminState.DRAIN, 10.0) is False
    assert r.set_admin_state(S1.name, AdminState.READY, 20.0) is True  # out of drain
    assert r.ramp(S1.name, 20.0) == (slowstart.MIN_SHARE, WINDOW)
    r.set_admin_state(S2.name, AdminState.MAINT, 10.0)
    assert r.set_admin_state(S2.name, AdminState.DRAIN, 15.0) is False  # maint -> drain: still no new users
    assert r.set_admin_state(S2.name, AdminState.READY, 30.0) is True
    r.set_health(S3.name, False, 10.0)
    r.set_admin_state(S3.name, AdminState.MAINT, 11.0)
    assert r.set_health(S3.name, True, 12.0) is False  # up, but in maintenance: not yet
    assert r.set_admin_state(S3.name, AdminState.READY, 40.0) is True
    r.set_health(S1.name, False, 25.0)  # down mid-ramp: the ramp is over, and starts again when up
    assert r.condition(S1.name).ramp_from is None
    r.set_health(S1.name, True, 50.0)
    assert r.ramp(S1.name, 50.0) == (slowstart.MIN_SHARE, WINDOW)


def test_a_server_added_by_a_reload_ramps_and_the_others_do_not() -> None:
    two = policy(members=(PoolMember(S1, 1), PoolMember(S2, 1)))
    r = Router(two, StickyTable(ttl_s=86400.0, max_entries=100))
    r.swap_policy(policy(), 100.0)
    assert r.ramp(S3.name, 100.0) == (slowstart.MIN_SHARE, WINDOW)
    assert r.ramp(S1.name, 100.0) is None and r.ramp(S2.name, 100.0) is None


def test_a_weight_raised_from_0_ramps() -> None:
    zero = policy(members=(PoolMember(S1, 1), PoolMember(S2, 1), PoolMember(S3, 0)))
    r = Router(zero, StickyTable(ttl_s=86400.0, max_entries=100))
    r.swap_policy(policy(), 100.0)
    assert r.ramp(S3.name, 130.0) == (pytest.approx(0.5), pytest.approx(30.0))


def test_a_reload_continues_a_ramp_from_where_it_is() -> None:
    r = new_router()
    restart(r, S3, 0.0, 100.0)
    before = r.ramp(S3.name, 130.0)
    r.swap_policy(replace(policy(), max_connect_attempts=2), 130.0)  # other settings change
    assert r.ramp(S3.name, 130.0) == before  # the same ramp, not a new one
    r.swap_policy(policy(window=120.0), 130.0)  # a longer window: same share now, slower after
    assert r.ramp(S3.name, 130.0) == (pytest.approx(0.5), pytest.approx(60.0))
    r.swap_policy(policy(window=0.0), 140.0)  # slowstart off: full weight at once
    assert r.ramp(S3.name, 140.0) is None


def test_leastsessions_ramps_on_homed_users_too() -> None:
    r = new_router(balance=BalanceKind.LEASTSESSIONS)
    for i in range(40):
        name = (S1, S2)[i % 2].name
        r.table.assign(f"home{i}", "default", name, 0.0)  # 20 homed users on each of TS01, TS02
    restart(r, S3, 0.0, 10.0)
    placed = [connect(r, f"n{i}", 10.0 + i * 0.1) for i in range(30)]
    assert placed.count(S3) <= 3  # share 5 %: about one user per 20 on a peer


def test_the_detail_names_the_ramping_server_and_its_share() -> None:
    r = new_router()
    restart(r, S3, 0.0, 100.0)
    d = r.preview(RouteRequest("10.0.0.1", "someone"), 115.0)
    assert "slow start: TS03 at 25% of its weight" in d.detail


def test_a_ramping_server_alone_in_its_pool_still_takes_users() -> None:
    one = RoutingPolicy((Pool("p", BalanceKind.LEASTCONN, (PoolMember(S1, 1),)),), slowstart={S1.name: 60.0})
    r = Router(one, StickyTable(ttl_s=86400.0, max_entries=100))
    restart(r, S1, 0.0, 1.0)
    assert r.decide(RouteRequest("10.0.0.1", "u"), 1.0).server == S1  # a ramp orders, never refuses
