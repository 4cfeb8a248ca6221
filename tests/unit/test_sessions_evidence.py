"""When a missing session may override a sticky entry (policy/host_sessions.py `history`): only on
evidence that covers the entry. Regression tests of issue 24 items 1-5, with a fake clock:
a logon in progress, a handoff's new process, domains, a reload of strip_domain, clock steps."""

from __future__ import annotations

from rdpbalancer.clock import ProcessClock
from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.host_sessions import HostReport, HostSession, SessionRules, SessionState, Trust
from rdpbalancer.policy.model import BalanceKind, Decision, Pool, PoolMember, Reason, RouteRequest, Server
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.policy.sticky import StickyEntry, StickyTable

S1, S2, S3 = (Server(f"TS0{i}", "127.0.0.1", 3390 + i) for i in (1, 2, 3))
NOW = 1_000_000.0
GRACE = 120.0


def farm(*, strip_domain: bool = True, shared: bool = False, grace: float = GRACE) -> Router:
    pool = Pool("farm", BalanceKind.LEASTCONN, tuple(PoolMember(s, 1) for s in (S1, S2, S3)))
    policy = RoutingPolicy((pool,), session_rules={"farm": SessionRules(Trust.ROUTE, grace)}, shared_table=shared)
    router = Router(policy, StickyTable(ttl_s=8 * 3600.0, max_entries=100))
    router.host_sessions = SessionDirectory(strip_domain=strip_domain)
    return router


def answer(router: Router, at: float, **lists: tuple[HostSession, ...]) -> None:
    assert router.host_sessions is not None
    for server in (S1, S2, S3):
        router.host_sessions.update(HostReport(server.name, lists.get(server.name, ()), at=at))


def decide(router: Router, user: str, at: float, trace: Trace | None = None) -> Decision:
    return router.decide(RouteRequest("10.0.0.1", user), at, trace)


def connect(router: Router, user: str, at: float) -> Decision:
    """A connection routed and opened (what LocalControl.attempt does)."""
    d = decide(router, user, at)
    assert d.server is not None
    router.assign(d, d.server, at)
    router.opened(d.server)
    router.user_opened(user)
    return d


def hang_up(router: Router, d: Decision, user: str) -> None:
    assert d.server is not None
    router.closed(d.server)
    router.user_closed(user)


def known(router: Router, user: str, at: float) -> None:
    """`user` logged on once, on TS03, and off: the hosts spell her name as the cookie does."""
    answer(router, at, TS03=(HostSession(user),))
    answer(router, at + 1)


# -- item 1: a logon in progress -----------------------------------------------------------------

def test_a_second_connection_during_a_logon_goes_to_the_same_host() -> None:
    r = farm()
    known(r, "alice", NOW - 3600)
    first = connect(r, "alice", NOW)  # her connection is open, her logon under way
    answer(r, NOW + 1)  # both hosts push: she is not listed yet
    trace = Trace()
    second = decide(r, "alice", NOW + 2, trace)
    assert (second.reason, second.server) == (Reason.STICKY_HIT, first.server)
    stands = next(text for step, _, text in trace.steps if step == "entry stands")
    assert "open or opening connection" in stands, trace.steps


def test_a_client_killed_during_its_logon_and_retried_goes_back() -> None:
    r = farm()
    known(r, "alice", NOW - 3600)
    first = connect(r, "alice", NOW)
    assert first.server == S1  # the first of three idle servers
    hang_up(r, first, "alice")  # killed at once; no connection left
    answer(r, NOW + 1)
    trace = Trace()
    again = decide(r, "alice", NOW + 2, trace)
    assert (again.reason, again.server) == (Reason.STICKY_HIT, S1)
    assert any("logon pending on TS01" in text for step, _, text in trace.steps if step == "entry stands")
    assert r.host_sessions is not None
    evidence = r.host_sessions.evidence(("alice",), ("TS01", "TS02", "TS03"), NOW + 2)
    assert evidence.pending == ("TS01",)  # placed, not listed
    assert "logon pending on" in evidence.text()


def test_past_the_grace_with_every_host_answering_since_the_entry_is_history() -> None:
    r = farm()
    known(r, "alice", NOW - 3600)
    first = connect(r, "alice", NOW)
    hang_up(r, first, "alice")
    answer(r, NOW + GRACE + 1)  # her logon never happened (or she logged off) and every host said so
    d = decide(r, "alice", NOW + GRACE + 2)
    assert d.reason is Reason.NO_SESSION and d.moved_from == (first.server.name if first.server else None)


def test_a_host_that_did_not_answer_since_the_entry_was_used_keeps_it() -> None:
    r = farm()
    assert r.host_sessions is not None
    r.host_sessions.configure({"TS01": 600.0, "TS02": 600.0, "TS03": 600.0})  # lists stay evidence for 10 min
    r.host_sessions.update(HostReport("TS03", (HostSession("alice"),), at=NOW - 400))
    answer(r, NOW - 300)
    r.table.assign("alice", "farm", "TS01", NOW - 200)
    for server in ("TS01", "TS03"):
        r.host_sessions.update(HostReport(server, (), at=NOW - 10))  # TS02's last answer predates the entry's use
    trace = Trace()
    d = decide(r, "alice", NOW, trace)
    assert d.reason is Reason.STICKY_HIT
    assert any("TS02 did not answer since the entry was last used" in text for _, _, text in trace.steps)


def test_an_open_connection_through_another_node_shows_as_a_recent_last_used() -> None:
    r = farm(shared=True, grace=5.0)  # a short grace: the shared table's 40 s still holds
    known(r, "alice", NOW - 3600)
    r.table.merge(StickyEntry("alice", "farm", "TS01", NOW - 3000, NOW - 30))  # refreshed by its sweep
    answer(r, NOW - 1)
    assert decide(r, "alice", NOW).reason is Reason.STICKY_HIT
    answer(r, NOW + 20)
    assert decide(r, "alice", NOW + 21).reason is Reason.NO_SESSION  # 51 s: no node holds her


# -- item 2: a handoff's (or restart's) new process -----------------------------------------------

def test_a_new_process_keeps_a_placement_made_in_the_last_push_interval() -> None:
    """The new process has the hosts' lists (handed over) and the table (loaded), not the old
    process's placements: the entry's own last_used stands for them."""
    r = farm()
    known(r, "alice", NOW - 3600)  # the handed-over lists: she logged off long ago
    r.table.load([StickyEntry("alice", "farm", "TS02", NOW - 3600, NOW - 5)], NOW)  # placed 5 s before the restart
    answer(r, NOW + 1)  # the hosts answer the new process: not listed yet
    d = decide(r, "alice", NOW + 2)
    assert (d.reason, d.server) == (Reason.STICKY_HIT, S2)


# -- item 3: domains -------------------------------------------------------------------------------

def test_without_strip_domain_a_cookie_without_a_domain_finds_a_session_reported_with_one() -> None:
    r = farm(strip_domain=False)
    r.table.assign("alice", "farm", "TS01", NOW - 3600)
    answer(r, NOW - 5, TS02=(HostSession("alice", domain="CORP", state=SessionState.DISCONNECTED, id="4"),))
    d = decide(r, "alice", NOW)
    assert (d.reason, d.server) == (Reason.SESSION, S2)


def test_without_strip_domain_a_cookie_with_a_domain_finds_a_session_reported_without() -> None:
    r = farm(strip_domain=False)
    answer(r, NOW - 5, TS03=(HostSession("alice", id="2"),))  # xrdp: no domain
    d = decide(r, "corp\\alice", NOW)
    assert (d.reason, d.server) == (Reason.SESSION, S3)


def test_a_name_listed_under_two_domains_is_ambiguous_and_the_entry_stands() -> None:
    r = farm(strip_domain=False)
    r.table.assign("alice", "farm", "TS01", NOW - 3600)
    answer(r, NOW - 5, TS02=(HostSession("alice", domain="CORP"),), TS03=(HostSession("alice", domain="LAB"),))
    trace = Trace()
    d = decide(r, "alice", NOW, trace)
    assert (d.reason, d.server, d.name_ambiguous) == (Reason.STICKY_HIT, S1, True)
    assert r.ambiguous_names == 1
    assert any("may stand for corp\\alice, lab\\alice" in text for _, _, text in trace.steps), trace.steps
    r.preview(RouteRequest("10.0.0.1", "alice"), NOW)
    assert r.ambiguous_names == 1  # a preview (explain) counts nothing


def test_a_name_the_hosts_never_listed_proves_nothing() -> None:
    """The cookie `alice.smith@corp` is the key `alice.smith`; the hosts report the account name
    `asmith`. Her session is on TS01, where her entry points: she must go there."""
    r = farm()
    r.table.assign("alice.smith", "farm", "TS01", NOW - 3600)
    answer(r, NOW - 5, TS01=(HostSession("asmith", domain="CORP"),))
    trace = Trace()
    d = decide(r, "alice.smith", NOW, trace)
    assert (d.reason, d.server) == (Reason.STICKY_HIT, S1)
    assert any("no host listed this name" in text for _, _, text in trace.steps), trace.steps


# -- item 4: a reload that changes strip_domain ----------------------------------------------------

def test_rekey_indexes_the_lists_by_the_new_rule() -> None:
    d = SessionDirectory(strip_domain=True)
    d.update(HostReport("TS02", (HostSession("Alice", domain="CORP", id="4"),), at=NOW))
    assert set(d.sessions_of("alice")) == {"TS02"}
    d.rekey(False)
    assert set(d.sessions_of("corp\\alice")) == {"TS02"} and not d.sessions_of("alice")
    assert d.keys_for("alice") == (("alice", "corp\\alice"), ())
    d.rekey(True)
    assert set(d.sessions_of("alice")) == {"TS02"}


# -- item 5: the process clock ---------------------------------------------------------------------

class FakeClocks:
    def __init__(self) -> None:
        self.wall, self.mono = NOW, 500.0

    def step(self, seconds: float) -> None:
        self.wall += seconds

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_a_step_of_the_wall_clock_changes_no_reading_of_the_process_clock() -> None:
    clocks = FakeClocks()
    clock = ProcessClock(lambda: clocks.wall, lambda: clocks.mono)
    start = clock.now()
    assert start == NOW
    clocks.step(-600)
    clocks.advance(3)
    assert clock.now() == start + 3
    clocks.step(+3600)
    assert clock.now() == start + 3


def test_a_successor_adopts_the_offset_so_handed_over_times_compare() -> None:
    clocks = FakeClocks()
    old = ProcessClock(lambda: clocks.wall, lambda: clocks.mono)
    clocks.step(-600)  # between the two starts
    new = ProcessClock(lambda: clocks.wall, lambda: clocks.mono)
    assert new.now() == old.now() - 600
    new.adopt(old.offset)
    assert new.now() == old.now()


def test_down_for_and_failover_after_follow_the_process_clock_through_a_step() -> None:
    clocks = FakeClocks()
    clock = ProcessClock(lambda: clocks.wall, lambda: clocks.mono)
    r = farm()
    r.policy = RoutingPolicy(r.policy.pools, failover_after_s=3.0, session_rules=r.policy.session_rules)
    r.table.assign("alice", "farm", "TS01", clock.now() - 10)
    r.set_health("TS01", False, clock.now())
    clocks.step(-600)  # the wall clock goes back ten minutes
    clocks.advance(4)
    d = decide(r, "alice", clock.now())
    assert d.reason is Reason.FAILOVER and d.moved_from == "TS01"


# -- found by the stateful property test (test_sessions_stateful.py) -------------------------------

def test_a_session_on_a_host_down_for_good_does_not_pull_her_second_connection_elsewhere() -> None:
    """Her session's host is down past failover_after: her first connection is placed anew; her
    second one, during that logon, follows her entry, not another failover."""
    r = farm()
    r.policy = RoutingPolicy(r.policy.pools, failover_after_s=60.0, session_rules=r.policy.session_rules)
    answer(r, NOW - 5, TS03=(HostSession("alice"),))
    r.set_health("TS03", False, NOW - 61)
    first = connect(r, "alice", NOW)
    assert first.reason is Reason.FAILOVER and first.moved_from == "TS03"
    second = decide(r, "alice", NOW)
    assert (second.reason, second.server) == (Reason.STICKY_HIT, first.server)


def test_a_host_back_from_down_is_no_evidence_until_it_answers_again() -> None:
    """A host that was down may have restarted without the sessions its last list named."""
    r = farm()
    answer(r, NOW - 30, TS03=(HostSession("alice"),))
    r.table.assign("alice", "farm", "TS02", NOW - 10)  # placed anew while TS03 was down
    r.set_health("TS03", False, NOW - 20)
    r.set_health("TS03", True, NOW - 1)
    d = decide(r, "alice", NOW)
    assert (d.reason, d.server) == (Reason.STICKY_HIT, S2)
    assert r.host_sessions is not None
    r.host_sessions.update(HostReport("TS03", (HostSession("alice"),), at=NOW))  # it answers again: evidence
    assert decide(r, "alice", NOW + 1).reason is Reason.SESSION
