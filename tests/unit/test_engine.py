from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.model import (
    BalanceKind,
    NoCookiePolicy,
    Pool,
    PoolMember,
    Reason,
    RouteRequest,
    Server,
)
from rdpbalancer.policy.sticky import StickyTable

S1, S2 = Server("TS01", "127.0.0.1", 3391), Server("TS02", "127.0.0.1", 3392)


def router(no_cookie: NoCookiePolicy = NoCookiePolicy.SOURCE_IP, balance: BalanceKind = BalanceKind.LEASTCONN,
           weights: tuple[int, int] = (1, 1)) -> Router:
    pool = Pool("default", balance, (PoolMember(S1, weights[0]), PoolMember(S2, weights[1])))
    return Router(RoutingPolicy((pool,), no_cookie=no_cookie), StickyTable(ttl_s=100.0, max_entries=10))


def req(user: str | None, host: str = "10.0.0.1") -> RouteRequest:
    return RouteRequest(client_host=host, user_key=user)


def test_new_then_sticky() -> None:
    r = router()
    d = r.decide(req("alice"), 0.0)
    assert d.reason is Reason.NEW and d.sticky_key == "alice" and len(d.candidates) == 2
    r.assign(d, d.candidates[0], 0.0)
    again = r.decide(req("alice"), 1.0)
    assert again.reason is Reason.STICKY_HIT and again.candidates == (d.candidates[0],)


def test_concurrent_new_user_agrees_once_assigned() -> None:
    r = router()
    d1 = r.decide(req("bob"), 0.0)
    r.assign(d1, d1.candidates[0], 0.0)
    r.opened(d1.candidates[0])
    d2 = r.decide(req("bob"), 0.0)
    assert d2.reason is Reason.STICKY_HIT and d2.server == d1.server


def test_leastconn_uses_open_connections() -> None:
    r = router()
    r.opened(S1)
    assert r.decide(req("x"), 0.0).server == S2
    r.closed(S1)
    r.opened(S2)
    assert r.decide(req("y"), 0.0).server == S1


def test_leastsessions_uses_homed_users() -> None:
    r = router(balance=BalanceKind.LEASTSESSIONS)
    r.table.assign("old", "default", "TS01", 0.0)  # a disconnected session on TS01
    assert r.decide(req("new"), 1.0).server == S2


def test_no_cookie_policies() -> None:
    d = router().decide(req(None, "10.9.9.9"), 0.0)
    assert d.reason is Reason.NEW and d.sticky_key == "ip:10.9.9.9"
    d = router(NoCookiePolicy.BALANCE).decide(req(None), 0.0)
    assert d.reason is Reason.NO_COOKIE and d.sticky_key is None and d.server is not None
    d = router(NoCookiePolicy.REJECT).decide(req(None), 0.0)
    assert d.reason is Reason.DENIED and d.server is None


def test_no_server_when_all_weights_zero() -> None:
    d = router(weights=(0, 0)).decide(req("alice"), 0.0)
    assert d.reason is Reason.NO_SERVER and d.candidates == ()


def test_sticky_user_reaches_weight_zero_server() -> None:
    r = router(weights=(0, 1))
    r.table.assign("alice", "default", "TS01", 0.0)
    assert r.decide(req("alice"), 1.0).server == S1


def test_entry_for_removed_server_is_not_a_hit() -> None:
    r = router()
    r.table.assign("alice", "default", "GONE", 0.0)
    assert r.decide(req("alice"), 1.0).reason is Reason.NEW


def test_routing_token_goes_to_named_server() -> None:
    r = router()
    d = r.decide(RouteRequest("10.0.0.1", None, msts_target=("127.0.0.1", 3392)), 0.0)
    assert d.reason is Reason.ROUTING_TOKEN and d.server == S2
    d = r.decide(RouteRequest("10.0.0.1", "alice", msts_target=("10.10.10.10", 3389)), 0.0)
    assert d.reason is Reason.NEW  # not one of ours: ordinary routing on the cookie


def test_expired_entry_is_new() -> None:
    r = router()
    r.table.assign("alice", "default", "TS01", 0.0)
    assert r.decide(req("alice"), 100.0).reason is Reason.NEW


def test_preview_changes_nothing_and_predicts_the_next_decision() -> None:
    """explain runs `preview`: asking where tied users would go must not advance the tie-break
    (it did: explain predicted the wrong server every time) nor count ambiguities."""
    servers = tuple(PoolMember(Server(f"TS0{i}", "127.0.0.1", 3390 + i), 1) for i in range(3))
    r = Router(RoutingPolicy(pools=(Pool("p", BalanceKind.LEASTCONN, servers),)),
               StickyTable(ttl_s=3600, max_entries=100))
    for i in range(6):
        request = RouteRequest("10.0.0.1", f"user{i}")
        predicted = [r.preview(request, 1.0).server for _ in range(3)]
        assert len(set(predicted)) == 1
        assert r.decide(request, 1.0).server == predicted[0]
    assert r.ambiguous == 0
