"""The session directory's rules (policy/host_sessions.py and the router), with a fake clock and
fake host lists: hits, no-session rebalancing, stale data, a host that disagrees with the
table, duplicates, truncated names, host drain, down hosts, trust = "hint", real load."""

from __future__ import annotations

from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.host_sessions import (
    HostReport,
    HostSession,
    SessionRules,
    SessionState,
    Trust,
    choose,
)
from rdpbalancer.policy.model import AdminState, BalanceKind, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.policy.sticky import StickyTable

S1, S2, S3 = (Server(f"TS0{i}", "127.0.0.1", 3390 + i) for i in (1, 2, 3))
ACTIVE, DISC = SessionState.ACTIVE, SessionState.DISCONNECTED
NOW = 1_000_000.0


def farm(*, trust: Trust = Trust.ROUTE, balance: BalanceKind = BalanceKind.LEASTCONN, truncated: int = 0,
         failover_after: float = 60.0) -> Router:
    pool = Pool("farm", balance, tuple(PoolMember(s, 1) for s in (S1, S2, S3)))
    policy = RoutingPolicy((pool,), failover_after_s=failover_after, truncated_length=truncated,
                           session_rules={"farm": SessionRules(trust)})
    router = Router(policy, StickyTable(ttl_s=8 * 3600.0, max_entries=100))
    router.host_sessions = SessionDirectory()
    return router


def report(router: Router, server: Server, *sessions: HostSession, at: float = NOW - 5, deny_new: bool = False) -> None:
    assert router.host_sessions is not None
    router.host_sessions.update(HostReport(server.name, sessions, at=at, deny_new=deny_new))


def all_answered(router: Router, **lists: tuple[HostSession, ...]) -> None:
    for server in (S1, S2, S3):
        report(router, server, *lists.get(server.name, ()))


def ask(router: Router, user: str, trace: Trace | None = None) -> object:
    return router.decide(RouteRequest(client_host="10.0.0.1", user_key=user), NOW, trace)


def test_a_live_session_wins_over_the_sticky_entry_and_corrects_it() -> None:
    r = farm()
    r.table.assign("alice", "farm", "TS01", NOW - 100)  # the table's guess
    all_answered(r, TS02=(HostSession("alice", state=DISC, id="7"),))
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert (d.reason, d.server, d.detail) == (Reason.SESSION, S2, "session 7 (disconnected) on TS02")
    r.assign(d, S2, NOW)
    entry = r.table.get("alice", NOW)
    assert entry is not None and entry.server == "TS02"


def test_a_session_is_found_with_no_sticky_entry_at_all() -> None:
    r = farm()
    report(r, S3, HostSession("Alice", domain="CORP", id="2"))  # the host's spelling, the cookie's key
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.reason is Reason.SESSION and d.server == S3


def test_a_sticky_entry_without_a_session_anywhere_is_history() -> None:
    r = farm()
    r.table.assign("alice", "farm", "TS01", NOW - 3600)
    report(r, S1, HostSession("alice"), at=NOW - 3000)  # she logged on there, then off
    r.opened(S2)  # TS01 and TS03 tie at 0 connections
    all_answered(r)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.reason is Reason.NO_SESSION and d.moved_from == "TS01"
    assert d.server in (S1, S3)
    assert d.detail.startswith("no host of farm has a session for alice (3 answered since it was last used, "
                               "3600s ago); the entry for TS01 was history")


def test_no_session_rebalancing_needs_every_host_to_have_answered_recently() -> None:
    r = farm()
    r.table.assign("alice", "farm", "TS01", NOW - 3600)
    report(r, S1)
    report(r, S2)
    report(r, S3, at=NOW - 61)  # older than stale_after: no evidence
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.reason is Reason.STICKY_HIT and d.server == S1


def test_a_failing_host_keeps_its_last_list_which_ages() -> None:
    r = farm()
    assert r.host_sessions is not None
    report(r, S2, HostSession("alice", id="9"), at=NOW - 30)
    r.host_sessions.failed("TS02", "connection refused", NOW - 1)
    assert r.decide(RouteRequest("10.0.0.1", "alice"), NOW).reason is Reason.SESSION  # 30 s old: still evidence
    later = r.decide(RouteRequest("10.0.0.1", "alice"), NOW + 31)  # 61 s old: not any more
    assert later.reason is Reason.NEW
    assert r.host_sessions.reports["TS02"].error == "connection refused"


def test_an_answer_older_than_the_one_held_is_ignored() -> None:
    d = SessionDirectory()
    d.update(HostReport("TS01", (HostSession("alice"),), at=NOW))
    d.update(HostReport("TS01", (), at=NOW - 10))  # a slow poll overtaken by a push
    assert dict(d.sessions_of("alice")) == {"TS01": HostSession("alice")}


def test_duplicates_prefer_the_sticky_entry_then_the_disconnected_session_then_the_newest() -> None:
    r = farm()
    all_answered(r, TS01=(HostSession("alice", state=ACTIVE, id="1", logon=NOW - 50),),
                 TS02=(HostSession("alice", state=DISC, id="2", logon=NOW - 900),))
    assert r.host_sessions is not None and r.host_sessions.duplicates() == {"alice": ("TS01", "TS02")}
    assert ask(r, "alice").server == S2  # type: ignore[attr-defined]  # the disconnected one waits for her
    r.table.assign("alice", "farm", "TS01", NOW - 10)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.server == S1 and "the sticky entry's TS01" in d.detail
    both_active = farm()
    all_answered(both_active, TS01=(HostSession("bob", logon=NOW - 50),), TS03=(HostSession("bob", logon=NOW - 5),))
    assert ask(both_active, "bob").server == S3  # type: ignore[attr-defined]


def test_duplicates_go_to_a_serving_host_before_the_sticky_entry_s_down_one() -> None:
    """Farm simulator, seed 2612: her entry's host was down (held until failover_after) while
    another host held a disconnected session of hers; she was refused, then balanced as new.
    A reachable session of hers goes first, and every one of them is a fallback candidate."""
    r = farm(failover_after=60.0)
    all_answered(r, TS01=(HostSession("alice", state=DISC, id="1", logon=NOW - 50),),
                 TS02=(HostSession("alice", state=DISC, id="2", logon=NOW - 900),))
    r.table.assign("alice", "farm", "TS01", NOW - 10)
    both_up = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert both_up.candidates == (S1, S2)  # a refused connect to TS01 falls through to her other session
    r.set_health("TS01", up=False, now=NOW - 5)  # down, within failover_after
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.reason is Reason.SESSION and d.candidates == (S2,), d.detail
    assert "TS01 not serving" in d.detail
    r.set_health("TS02", up=False, now=NOW - 5)  # both down: her entry's is held as before
    held = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert held.server == S1 and "held until failover_after" in held.detail
    maint = farm(failover_after=60.0)
    all_answered(maint, TS01=(HostSession("alice", state=DISC, id="1", logon=NOW - 50),),
                 TS02=(HostSession("alice", state=DISC, id="2", logon=NOW - 900),))
    maint.table.assign("alice", "farm", "TS01", NOW - 10)
    maint.set_admin_state("TS01", AdminState.MAINT, NOW)  # maintenance: left at once, for her other session
    assert maint.decide(RouteRequest("10.0.0.1", "alice"), NOW).candidates == (S2,)


def test_a_truncated_cookie_resolves_to_the_one_user_with_a_session() -> None:
    r = farm(truncated=9)
    all_answered(r, TS03=(HostSession("alexandra.smith", id="4"),))
    d = r.decide(RouteRequest("10.0.0.1", "alexandra"), NOW)
    assert d.reason is Reason.SESSION and d.server == S3 and d.sticky_key == "alexandra"


def test_a_truncated_cookie_shared_by_two_users_with_sessions_is_not_resolved() -> None:
    r = farm(truncated=9)
    all_answered(r, TS01=(HostSession("alexandra.smith"),), TS03=(HostSession("alexandra.jones"),))
    assert r.host_sessions is not None
    found, why = choose(r.host_sessions.evidence((), ("TS01", "TS02", "TS03"), NOW, truncated="alexandra"), None)
    assert found is None and why.startswith("2 users with sessions share this truncated name")
    assert r.decide(RouteRequest("10.0.0.1", "alexandra"), NOW).reason is Reason.NEW


def test_a_host_that_refuses_new_logons_takes_no_new_users_but_keeps_its_sessions() -> None:
    r = farm()
    report(r, S1, HostSession("carol"), deny_new=True)
    report(r, S2)
    report(r, S3)
    r.opened(S2)
    r.opened(S3)  # by connections TS01 would be first
    assert ask(r, "dave").server != S1  # type: ignore[attr-defined]
    assert ask(r, "carol").server == S1  # type: ignore[attr-defined]


def test_a_session_on_a_down_host_is_held_until_failover_after_then_proves_nothing() -> None:
    r = farm(failover_after=60.0)
    all_answered(r, TS02=(HostSession("alice", id="3"),))
    r.set_health("TS02", up=False, now=NOW - 10)
    held = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert held.reason is Reason.SESSION and held.server == S2 and "held until failover_after" in held.detail
    moved = r.decide(RouteRequest("10.0.0.1", "alice"), NOW + 55)  # down 65 s; the list is 60 s old
    assert moved.reason is Reason.FAILOVER and moved.moved_from == "TS02" and moved.server != S2


def test_a_session_on_a_host_in_maintenance_is_left_at_once() -> None:
    r = farm()
    all_answered(r, TS02=(HostSession("alice"),))
    r.set_admin_state("TS02", AdminState.MAINT, 0.0)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.reason is Reason.FAILOVER and d.moved_from == "TS02" and "in maintenance" in d.detail


def test_trust_hint_shows_the_evidence_and_routes_as_the_table_says() -> None:
    r = farm(trust=Trust.HINT)
    r.table.assign("alice", "farm", "TS01", NOW - 100)
    all_answered(r, TS02=(HostSession("alice", id="5"),))
    trace = Trace()
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW, trace)
    assert d.reason is Reason.STICKY_HIT and d.server == S1
    assert "[directory, as a hint: sessions on TS02 (active, id 5)]" in d.detail
    assert ("sessions", True, "sessions on TS02 (active, id 5)") in trace.steps


def test_leastsessions_counts_real_sessions_and_placements_since_the_last_answer() -> None:
    r = farm(balance=BalanceKind.LEASTSESSIONS)
    for i in range(3):
        r.table.assign(f"ghost{i}", "farm", "TS02", NOW - 100)  # the table's guess: TS02 is busy
    all_answered(r, TS01=tuple(HostSession(f"u{i}") for i in range(4)), TS03=(HostSession("v"),))
    d = r.decide(RouteRequest("10.0.0.1", "new1"), NOW)
    assert d.server == S2  # really empty: ghost users are only entries
    r.assign(d, S2, NOW)
    r.assign(r.decide(RouteRequest("10.0.0.1", "new2"), NOW), S2, NOW)
    assert r.host_sessions is not None and r.host_sessions.load("TS02") == 2  # placed, not yet listed by the host
    assert r.decide(RouteRequest("10.0.0.1", "new3"), NOW).server == S3  # TS03: 1 session < TS02: 2 placed
    report(r, S2, HostSession("new1"), at=NOW + 1)  # new2's logon is still pending: counted
    assert r.host_sessions.load("TS02") == 2
    report(r, S2, HostSession("new1"), at=NOW + 121)  # past the logon grace: new2 never logged on
    assert r.host_sessions.load("TS02") == 1


def test_when_every_connect_fails_a_no_session_user_gets_the_old_entry_back() -> None:
    r = farm()
    r.table.assign("alice", "farm", "TS01", NOW - 3600)
    all_answered(r)
    d = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert d.server is not None
    r.assign(d, d.server, NOW)
    r.unassign(d, NOW)
    entry = r.table.get("alice", NOW)
    assert entry is not None and entry.server == "TS01"


def test_users_without_a_cookie_are_not_looked_up() -> None:
    r = farm()
    all_answered(r)
    d = r.decide(RouteRequest("10.0.0.1", None), NOW)
    assert d.reason is Reason.NEW and d.sticky_key == "ip:10.0.0.1"


def test_a_pool_without_a_source_routes_as_before() -> None:
    pool = Pool("farm", BalanceKind.LEASTCONN, (PoolMember(S1, 1), PoolMember(S2, 1)))
    r = Router(RoutingPolicy((pool,)), StickyTable(ttl_s=100.0, max_entries=10))
    r.host_sessions = SessionDirectory()
    r.host_sessions.update(HostReport("TS02", (HostSession("alice"),), at=NOW))
    r.table.assign("alice", "farm", "TS01", NOW - 1)
    assert r.decide(RouteRequest("10.0.0.1", "alice"), NOW).reason is Reason.STICKY_HIT


def test_a_user_placed_since_the_hosts_last_answer_is_not_history_yet() -> None:
    """xfreerdp retries at once when its first connection fails: the user placed half a second ago
    is not in any host's list yet, and the entry must hold, not be rebalanced as no-session."""
    r = farm()
    all_answered(r)
    first = r.decide(RouteRequest("10.0.0.1", "alice"), NOW)
    assert first.server is not None
    r.assign(first, first.server, NOW)
    again = r.decide(RouteRequest("10.0.0.1", "alice"), NOW + 0.5)
    assert again.reason is Reason.STICKY_HIT and again.server == first.server
    assert "logon pending on" in str(r.host_sessions.evidence(("alice",), ("TS01", "TS02", "TS03"), NOW).text())  # type: ignore[union-attr]
    for server in (S1, S2, S3):  # every host answered after the placement, without her: her logon
        report(r, server, at=NOW + 1)  # takes seconds to show, so that proves nothing yet
    assert r.decide(RouteRequest("10.0.0.1", "alice"), NOW + 2).reason is Reason.STICKY_HIT


def test_placements_on_a_host_that_never_answers_again_do_not_pile_up() -> None:
    d = SessionDirectory()
    d.configure({"TS01": 60.0})
    d.update(HostReport("TS01", (), at=NOW))
    for i in range(1000):
        d.placed("TS01", f"u{i}", NOW + i)  # one a second, the host silent
    assert d.load("TS01") <= 121  # only the last max(stale_after, logon grace)'s worth is kept
    assert "u0" not in d._placed_on and "u999" in d._placed_on  # the index shrinks too
