"""[limits] per_user_connections: counted per user key after the Connection Request, refused
as `per-user`, and never touching other users."""

from __future__ import annotations

import asyncio

from rdpbalancer.policy.engine import Router, RoutingPolicy, counted_user
from rdpbalancer.policy.model import BalanceKind, Decision, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.relay.control import IgnoreBackendEvents, LocalControl
from rdpbalancer.relay.facts import Abandoned, Answer, AttemptFailed, Decided, Durable, Finished, RouteAsked
from rdpbalancer.store.sqlite import SqliteStickyStore

TS01, TS02 = Server("TS01", "127.0.0.1", 3391), Server("TS02", "127.0.0.1", 3392)


def new_router(limit: int | None = 2) -> Router:
    pool = Pool("default", BalanceKind.LEASTCONN, (PoolMember(TS01, 1), PoolMember(TS02, 1)))
    return Router(RoutingPolicy((pool,), per_user_connections=limit), StickyTable(ttl_s=3600.0, max_entries=1000))


def test_the_limit_refuses_the_users_next_connection_and_nobody_elses() -> None:
    r = new_router()
    for _ in range(2):
        d = r.decide(RouteRequest("10.0.0.1", "loop"), 0.0)
        assert d.server is not None
        r.user_opened("loop")
    d = r.decide(RouteRequest("10.0.0.1", "loop"), 0.0)
    assert d.reason is Reason.PER_USER and not d.candidates
    assert 'user loop has 2 open connection(s) ([limits] per_user_connections = 2)' in d.detail
    assert r.decide(RouteRequest("10.0.0.1", "alice"), 0.0).reason is Reason.NEW  # others go on
    r.user_closed("loop")
    assert r.decide(RouteRequest("10.0.0.1", "loop"), 0.0).server is not None  # one left: room again
    assert "loop" in r.user_connections


def test_no_limit_by_default() -> None:
    r = new_router(None)
    for _ in range(100):
        r.user_opened("kiosk")
    assert r.decide(RouteRequest("10.0.0.1", "kiosk"), 0.0).server is not None


def test_clients_without_a_cookie_are_the_per_source_limits_business() -> None:
    assert counted_user(Decision(Reason.NEW, "ip:10.0.0.1", "default", (TS01,))) is None
    assert counted_user(Decision(Reason.NO_COOKIE, None, "default", (TS01,))) is None
    assert counted_user(Decision(Reason.NEW, "alice", "default", (TS01,))) == "alice"


def test_the_control_plane_counts_every_attempt_and_releases_it_on_each_way_out(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        r = new_router(limit=3)
        store = SqliteStickyStore(str(tmp_path / "s.db"))
        store.load()
        store.start(asyncio.get_running_loop())
        control = LocalControl(r, store, IgnoreBackendEvents(), lambda: 0.0)
        answers: list[Answer] = []
        for i in range(3):
            control.ask(RouteAsked(f"s{i}", RouteRequest("10.0.0.1", "bob")), answers.append)
        for _ in range(500):  # until every first attempt's write is durable (the store's thread)
            if sum(isinstance(a, Durable) for a in answers) == 3:
                break
            await asyncio.sleep(0.01)
        routed = [a.decision for a in answers if isinstance(a, Decided) and a.decision is not None]
        assert len(routed) == 3 and sum(isinstance(a, Durable) and a.unavailable is None for a in answers) == 3
        assert r.user_connections["bob"] == 3
        control.ask(RouteAsked("s3", RouteRequest("10.0.0.1", "bob")), answers.append)
        assert isinstance(answers[-1], Decided) and answers[-1].decision is not None
        assert answers[-1].decision.reason is Reason.PER_USER and not answers[-1].attempted
        control.tell(AttemptFailed("s0", routed[0].candidates[0], "refused"))  # failed: released
        control.tell(Abandoned("s1", routed[1].candidates[0]))  # given up: released
        control.tell(Finished("s2", routed[2], routed[2].candidates[0], 0, 0))  # ended: released
        assert "bob" not in r.user_connections and not r.connections
        await store.close()

    asyncio.run(main())
