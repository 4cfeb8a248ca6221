"""The farm simulator's invariant checker (tests/farm/invariants.py) fed crafted violating
traces: each invariant must be able to fail (an invariant that cannot is a defect). Pure, no
processes: in the quick tier, unlike the day itself (test_farm_day.py)."""

from __future__ import annotations

from tests.farm.invariants import Checker


def checker() -> Checker:
    return Checker(failover_after_s=6.0, recover_s=2.0)


def logged_on(c: Checker, user: str, host: str, t: float = 1.0) -> None:
    c.feed(t, "connect", user=user, cid=1)
    c.feed(t + 0.01, "logon_start", user=user, host=host)
    c.feed(t + 0.02, "landed", user=user, cid=1, host=host)
    c.feed(t + 1.0, "logon_done", user=user, host=host, state="active")


def test_the_checker_catches_a_user_sent_away_from_her_session() -> None:
    c = checker()
    logged_on(c, "alice", "TS01")
    c.feed(5.0, "session_state", user="alice", host="TS01", state="disconnected")
    c.feed(9.0, "connect", user="alice", cid=2)
    c.feed(9.01, "logon_start", user="alice", host="TS02")  # a second session
    c.feed(9.02, "landed", user="alice", cid=2, host="TS02")
    c.feed(9.5, "sticky", user="alice", server="TS03")  # and the table names neither
    assert [v.invariant for v in c.violations] == ["2-second-session", "1-misrouted", "3-sticky-lost"]
    assert any("disconnected on TS01" in v.what for v in c.violations)
    assert any("VIOLATION" in row for row in c.trace_of("alice"))


def test_the_checker_catches_a_retry_during_a_logon_placed_elsewhere() -> None:
    c = checker()
    c.feed(1.0, "connect", user="bob", cid=1)
    c.feed(1.01, "logon_start", user="bob", host="TS01")
    c.feed(1.02, "landed", user="bob", cid=1, host="TS01")
    c.feed(1.2, "connect", user="bob", cid=2)  # the client retries while the logon runs
    c.feed(1.21, "logon_start", user="bob", host="TS03")
    c.feed(1.22, "landed", user="bob", cid=2, host="TS03")
    assert [v.invariant for v in c.violations] == ["2-second-session", "1-misrouted"]
    assert "pending on TS01" in c.violations[0].what


def test_the_checker_excuses_a_host_down_past_failover_after_only() -> None:
    c = checker()
    logged_on(c, "carol", "TS01")
    c.feed(3.0, "port_closed", host="TS01")
    c.feed(6.0, "connect", user="carol", cid=2)  # down 3 s < failover_after: must not move
    c.feed(6.01, "logon_start", user="carol", host="TS02")
    c.feed(6.02, "landed", user="carol", cid=2, host="TS02")
    assert [v.invariant for v in c.violations] == ["2-second-session", "1-misrouted"]
    c = checker()
    logged_on(c, "carol", "TS01")
    c.feed(3.0, "port_closed", host="TS01")
    c.feed(10.0, "connect", user="carol", cid=2)  # down 7 s > failover_after: moved, excused
    c.feed(10.01, "logon_start", user="carol", host="TS02")
    c.feed(10.02, "landed", user="carol", cid=2, host="TS02")
    c.feed(11.0, "admin_state", host="TS03", state="maint")
    assert c.violations == []
    assert c.moves == [(10.02, "carol", "TS01", "TS02", None, 1.02)]


def test_the_checker_catches_a_lost_entry_unnamed_moves_refusals_and_counts() -> None:
    c = checker()
    logged_on(c, "dave", "TS01")
    c.feed(3.0, "sticky", user="dave", server=None)
    c.feed(3.5, "logoff", user="dave", host="TS01")
    c.feed(4.0, "connect", user="dave", cid=2)
    c.feed(4.01, "logon_start", user="dave", host="TS02")  # no session any more: a move is fine
    c.feed(4.02, "landed", user="dave", cid=2, host="TS02", client="127.0.0.9:4242")
    assert [v.invariant for v in c.violations] == ["3-sticky-lost"]
    c.check_moves_logged([{"user": "dave", "server": "TS02", "reason": "sticky-hit", "client": "127.0.0.9:4242"}], 5.0)
    c.check_moves_logged([{"user": "dave", "server": "TS02", "reason": "no-session", "client": "127.0.0.9:4242"}], 5.0)
    c.check_refusals_logged(3, 2, 5.0)
    c.check_refusals_logged(2, 2, 5.0)
    c.check_idle("connections", 1, 0, 5.0)
    c.check_idle("connections", 0, 0, 5.0)
    assert [v.invariant for v in c.violations] == ["3-sticky-lost", "5-move-unnamed", "5-refusal-unnamed",
                                                   "4-not-idle"]
    c.check_moves_logged([], 6.0)  # no line at all for her move
    assert [v.invariant for v in c.violations][-1] == "5-move-unnamed"
    assert "no routed line" in c.violations[-1].what


def test_the_checker_excuses_a_second_node_only_while_redis_was_away() -> None:
    c = checker()
    c.feed(1.0, "connect", user="erin", cid=1, node="A")
    c.feed(1.01, "logon_start", user="erin", host="TS01")
    c.feed(1.02, "landed", user="erin", cid=1, host="TS01", node="A")
    c.feed(2.0, "connect", user="erin", cid=2, node="B")  # the other node, Redis up: no excuse
    c.feed(2.01, "logon_start", user="erin", host="TS02")
    c.feed(2.02, "landed", user="erin", cid=2, host="TS02", node="B")
    assert [v.invariant for v in c.violations] == ["2-second-session", "1-misrouted"]
    c = checker()
    c.feed(1.0, "connect", user="erin", cid=1, node="A")
    c.feed(1.01, "logon_start", user="erin", host="TS01")
    c.feed(1.02, "landed", user="erin", cid=1, host="TS01", node="A")
    c.feed(1.5, "redis_down")
    c.feed(2.0, "connect", user="erin", cid=2, node="A")  # the same node while Redis is away: no excuse
    c.feed(2.01, "logon_start", user="erin", host="TS02")
    c.feed(2.02, "landed", user="erin", cid=2, host="TS02", node="A")
    assert [v.invariant for v in c.violations] == ["2-second-session", "1-misrouted"]
    c.feed(3.0, "connect", user="erin", cid=3, node="B")  # the other node while Redis is away: excused
    c.feed(3.01, "logon_start", user="erin", host="TS03")
    c.feed(3.02, "landed", user="erin", cid=3, host="TS03", node="B")
    assert len(c.violations) == 2 and c.excuses["1/2-split-during-a-redis-outage"] == 2


def test_an_entry_corrected_to_the_host_of_her_session_is_not_lost() -> None:
    """A failover left a duplicate on TS01; she logs off TS02; the session rule sends her back to
    TS01 and corrects her entry before that connect (which fails: TS01 flaps) gets there."""
    c = checker()
    logged_on(c, "fay", "TS01")
    c.feed(2.0, "port_closed", host="TS01")
    c.feed(9.0, "connect", user="fay", cid=2)
    c.feed(9.01, "logon_start", user="fay", host="TS02")
    c.feed(9.02, "landed", user="fay", cid=2, host="TS02")
    c.feed(10.0, "port_open", host="TS01")
    c.feed(11.0, "logoff", user="fay", host="TS02")
    c.feed(20.0, "sticky", user="fay", server="TS01")
    assert c.violations == [] and c.excuses["3-entry-names-her-session"] == 1
    c.feed(21.0, "sticky", user="fay", server="TS03")  # neither where she was nor where her session is
    assert [v.invariant for v in c.violations] == ["3-sticky-lost"]


def test_the_checker_catches_a_refusal_while_her_host_answers() -> None:
    c = checker()
    logged_on(c, "gus", "TS01")
    c.feed(20.0, "connect", user="gus", cid=2)
    c.feed(20.01, "connect_fail", user="gus", cid=2, why="refused")
    assert [v.invariant for v in c.violations] == ["1-refused-with-a-session"]
    c.feed(30.0, "port_closed", host="TS01")  # her host down: a refusal is what she gets
    c.feed(31.0, "connect", user="gus", cid=3)
    c.feed(31.01, "connect_fail", user="gus", cid=3, why="refused")
    c.feed(40.0, "port_open", host="TS01")
    c.feed(50.0, "chaos", what="worker-kill")  # a worker killed under her connect
    c.feed(50.0, "connect", user="gus", cid=4)
    c.feed(50.01, "connect_fail", user="gus", cid=4, why="refused")
    assert len(c.violations) == 1


def test_the_checker_catches_a_new_user_placed_on_a_host_that_refuses_new_logons() -> None:
    c = checker()
    c.feed(1.0, "deny_new", host="TS02", on=True)
    c.feed(5.0, "connect", user="hal", cid=1)
    c.feed(5.01, "logon_refused", user="hal", host="TS02")
    c.feed(5.02, "landed", user="hal", cid=1, host="TS02", denied=True, client="127.0.0.5:5555")
    c.check_drain([{"client": "127.0.0.5:5555", "reason": "sticky-hit", "server": "TS02"}], 2.0, 6.0)
    assert c.violations == []  # her entry (a drain lets sticky users in)
    c.check_drain([{"client": "127.0.0.5:5555", "reason": "new", "server": "TS02"}], 2.0, 6.0)
    assert [v.invariant for v in c.violations] == ["drain-ignored"]


def test_a_move_decided_by_the_other_of_two_clients_at_once_is_named() -> None:
    c = checker()
    logged_on(c, "ida", "TS01")
    c.feed(2.0, "logoff", user="ida", host="TS01")
    c.feed(5.0, "connect", user="ida", cid=2)
    c.feed(5.0, "connect", user="ida", cid=3)
    c.feed(5.01, "logon_start", user="ida", host="TS02")
    c.feed(5.02, "connect_fail", user="ida", cid=2, why="cut-after-answer", client="127.0.0.2:1000")
    c.feed(5.02, "landed", user="ida", cid=3, host="TS02", client="127.0.1.2:2000")
    routed = [{"client": "127.0.0.2:1000", "server": "TS02", "reason": "no-session"},
              {"client": "127.0.1.2:2000", "server": "TS02", "reason": "sticky-hit"}]
    c.check_moves_logged(routed, 6.0)
    assert c.violations == []
    c.check_moves_logged(routed[1:], 6.0)
    assert [v.invariant for v in c.violations] == ["5-move-unnamed"]
    # both land, the sticky-hit one first: its sibling (landing just after) named the move
    c = checker()
    logged_on(c, "ida", "TS01")
    c.feed(2.0, "logoff", user="ida", host="TS01")
    c.feed(5.0, "connect", user="ida", cid=2)
    c.feed(5.0, "connect", user="ida", cid=3)
    c.feed(5.01, "logon_start", user="ida", host="TS02")
    c.feed(5.02, "landed", user="ida", cid=3, host="TS02", client="127.0.1.2:2000")
    c.feed(5.03, "landed", user="ida", cid=2, host="TS02", client="127.0.0.2:1000")
    c.check_moves_logged(routed, 6.0)
    assert c.violations == [] and len(c.moves) == 1


def test_a_move_decided_while_her_host_was_in_maintenance_is_excused_when_her_logon_starts_later() -> None:
    """60-minute run, seed 26: routed away from TS01 in maintenance; TS01 back to ready before
    her logon began on the other host (the connect took 3 s): judged from the connect's start."""
    c = checker()
    logged_on(c, "jo", "TS01")
    c.feed(3.0, "admin_state", host="TS01", state="maint")
    c.feed(4.0, "connect", user="jo", cid=2)
    c.feed(5.0, "admin_state", host="TS01", state="ready")
    c.feed(7.0, "logon_start", user="jo", host="TS02")
    c.feed(7.01, "landed", user="jo", cid=2, host="TS02")
    assert c.violations == [] and c.excuses["1/2-maintenance"] == 2
    c.feed(20.0, "connect", user="jo", cid=3)  # TS01 ready all through: a second session is one
    c.feed(20.01, "logon_start", user="jo", host="TS03")
    assert [v.invariant for v in c.violations] == ["2-second-session"]


def test_a_refusal_is_excused_when_her_only_answering_host_has_gone_silent() -> None:
    """60-minute run, seed 26: her entry's host down (held), her other session on a host whose
    list was older than stale_after: the balancer could not know it."""
    c = checker()
    logged_on(c, "kim", "TS01")
    c.feed(2.0, "logon_done", user="kim", host="TS02", state="disconnected")  # a duplicate, as after a failover
    c.feed(3.0, "silent", host="TS02")
    c.feed(10.0, "port_closed", host="TS01")
    c.feed(10.5, "connect", user="kim", cid=9)
    c.feed(10.51, "connect_fail", user="kim", cid=9, why="refused")
    assert c.violations == [] and c.excuses["1-refusal-session-only-on-a-silent-host"] == 1
    c.feed(11.0, "speaks", host="TS02")
    c.feed(11.5, "connect", user="kim", cid=10)  # TS02 pushes again (fresh within a push): not excused
    c.feed(11.51, "connect_fail", user="kim", cid=10, why="refused")
    assert [v.invariant for v in c.violations] == ["1-refused-with-a-session"]


def test_a_move_named_by_a_refused_connect_of_hers_is_named() -> None:
    """60-minute run, seed 26: the session rule corrected her entry to TS04 in a connect that was
    then refused (TS04 down, held); her next connect was a sticky hit there."""
    c = checker()
    logged_on(c, "lu", "TS08")
    c.feed(2.0, "logon_done", user="lu", host="TS04", state="disconnected")  # a duplicate, as after a failover
    c.feed(4.9, "chaos", what="worker-kill")  # (the refusal itself is not what this test judges)
    c.feed(5.0, "connect", user="lu", cid=2)
    c.feed(5.01, "connect_fail", user="lu", cid=2, why="refused", client="127.0.0.15:1000")
    c.feed(6.0, "connect", user="lu", cid=3)
    c.feed(6.02, "landed", user="lu", cid=3, host="TS04", client="127.0.0.15:2000")
    sticky = {"client": "127.0.0.15:2000", "server": "TS04", "reason": "sticky-hit"}
    rejected = {"client": "127.0.0.15:1000", "reason": "rejected",
                "detail": "connect-failed: TS04 unreachable (session 16 (disconnected) on TS04 (down for 1s))"}
    c.check_moves_logged([sticky, rejected], 7.0)
    assert c.violations == []
    c.check_moves_logged([sticky, {**rejected, "detail": "connect-failed: TS08 unreachable (session 3 "
                                   "(active) on TS08)"}], 7.0)
    assert [v.invariant for v in c.violations] == ["5-move-unnamed"]
