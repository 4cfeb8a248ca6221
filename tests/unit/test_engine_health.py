"""Down-server policy, drain and maintenance, with a fake clock."""

import math

from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.model import AdminState, BalanceKind, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyTable

A, B, C = (Server(n, "127.0.0.1", p) for n, p in (("A", 1), ("B", 2), ("C", 3)))


def router(failover_after: float = 60.0) -> Router:
    pool = Pool("default", BalanceKind.LEASTCONN, tuple(PoolMember(s, 1) for s in (A, B, C)))
    r = Router(RoutingPolicy((pool,), failover_after_s=failover_after), StickyTable(ttl_s=8 * 3600, max_entries=100))
    r.table.assign("alice", "default", "A", 0.0)
    return r


def alice(r: Router, now: float):  # type: ignore[no-untyped-def]
    return r.decide(RouteRequest("10.0.0.1", "alice"), now)


def test_new_users_avoid_down_servers() -> None:
    r = router()
    r.set_health("A", False, 10.0)
    r.set_health("B", False, 10.0)
    for i in range(5):
        d = r.decide(RouteRequest("10.0.0.1", f"u{i}"), 11.0)
        assert d.candidates == (C,)


def test_sticky_user_held_within_failover_after_then_moved() -> None:
    r = router(failover_after=60.0)
    r.set_health("A", False, 100.0)
    held = alice(r, 159.0)
    assert held.reason is Reason.STICKY_HIT and held.server == A and "held" in held.detail
    moved = alice(r, 160.0)
    assert moved.reason is Reason.FAILOVER and moved.moved_from == "A" and A not in moved.candidates


def test_failover_zero_and_never() -> None:
    r = router(failover_after=0.0)
    r.set_health("A", False, 100.0)
    assert alice(r, 100.0).reason is Reason.FAILOVER
    r = router(failover_after=math.inf)
    r.set_health("A", False, 100.0)
    assert alice(r, 7 * 3600.0).reason is Reason.STICKY_HIT  # (still within the 8h ttl)


def test_server_back_up_keeps_its_users() -> None:
    r = router(failover_after=60.0)
    r.set_health("A", False, 100.0)
    r.set_health("A", True, 120.0)
    assert alice(r, 500.0).reason is Reason.STICKY_HIT


def test_drain_admits_sticky_users_and_refuses_new_ones() -> None:
    r = router()
    r.set_admin_state("A", AdminState.DRAIN, 0.0)
    assert alice(r, 1.0).server == A
    for i in range(6):
        assert A not in r.decide(RouteRequest("10.0.0.1", f"new{i}"), 1.0).candidates


def test_maint_admits_nobody() -> None:
    r = router()
    r.set_admin_state("A", AdminState.MAINT, 0.0)
    d = alice(r, 1.0)
    assert d.reason is Reason.FAILOVER and d.moved_from == "A" and A not in d.candidates


def test_no_healthy_server_is_a_value() -> None:
    r = router()
    for s in "ABC":
        r.set_health(s, False, 0.0)
    d = r.decide(RouteRequest("10.0.0.1", "bob"), 1.0)
    assert d.reason is Reason.NO_SERVER and d.candidates == ()


def test_failover_with_no_healthy_server_keeps_the_entry() -> None:
    r = router(failover_after=0.0)
    for s in "ABC":
        r.set_health(s, False, 0.0)
    assert alice(r, 1.0).reason is Reason.NO_SERVER
    entry = r.table.get("alice", 1.0)
    assert entry is not None and entry.server == "A"


def test_unassign_restores_a_moved_user_and_forgets_a_new_one() -> None:
    r = router(failover_after=0.0)
    r.set_health("A", False, 0.0)
    d = alice(r, 1.0)
    r.assign(d, d.candidates[0], 1.0)
    r.unassign(d, 2.0)
    entry = r.table.get("alice", 2.0)
    assert entry is not None and entry.server == "A"
    new = r.decide(RouteRequest("10.0.0.1", "bob"), 3.0)
    r.assign(new, new.candidates[0], 3.0)
    r.unassign(new, 3.0)
    assert r.table.get("bob", 3.0) is None


def test_routing_token_to_a_drained_server_is_admitted_but_not_maint() -> None:
    r = router()
    r.set_admin_state("B", AdminState.DRAIN, 0.0)
    d = r.decide(RouteRequest("10.0.0.1", None, msts_target=("127.0.0.1", 2)), 0.0)
    assert d.reason is Reason.ROUTING_TOKEN and d.server == B
    r.set_admin_state("B", AdminState.MAINT, 0.0)
    d = r.decide(RouteRequest("10.0.0.1", None, msts_target=("127.0.0.1", 2)), 0.0)
    assert d.reason is not Reason.ROUTING_TOKEN
