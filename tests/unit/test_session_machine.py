"""Playbooks for the session machine (relay/machine.py): exact event -> command sequences, no
sockets, no loop, no clock. Each test is one story a connection can tell; the shell
(relay/session.py) and the component tests check that the commands are carried out."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from rdpbalancer.policy.limits import LimitSettings, Refusal
from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.proto.builders import build_connection_request, build_proxy_v1, build_proxy_v2
from rdpbalancer.relay import machine as m
from rdpbalancer.relay.context import State
from rdpbalancer.settings import RelaySettings

CLIENT, SERVER = m.Side.CLIENT, m.Side.SERVER
TS01, TS02 = Server("TS01", "127.0.0.1", 3390), Server("TS02", "127.0.0.1", 3391)
CR = build_connection_request(b"alice")
ADDR = ("192.0.2.7", 50123)
SETTINGS = RelaySettings(handshake_timeout_s=5.0, connect_timeout_s=4.0)
NEW = Decision(Reason.NEW, sticky_key="alice", pool="farm", candidates=(TS01, TS02), detail="leastconn")
ALICE = RouteRequest(client_host=ADDR[0], user_key="alice", listener="0.0.0.0:3389")


def machine(settings: RelaySettings = SETTINGS) -> m.SessionMachine:
    return m.SessionMachine(settings, "0.0.0.0:3389")


def play(session: m.SessionMachine, *events: m.Event) -> list[m.Command]:
    """All the commands the events produce, in order."""
    return [command for event in events for command in session.handle(event)]


def routing(session: m.SessionMachine, cr: bytes = CR) -> None:
    """Through admission and the handshake: the machine asked where to go."""
    assert play(session, m.ClientConnected(ADDR), m.Admitted(), m.ClientData(cr)) == [
        m.Admit("192.0.2.7"), m.Register(5.0), m.HandshakeDone(), m.AskRoute(ALICE)]
    assert session.state is State.ROUTING


def test_a_new_user_is_admitted_routed_connected_and_relayed() -> None:
    s = machine()
    routing(s)
    assert s.handle(m.RouteAnswered(NEW, attempted=True, at=100.0)) == [m.Connect(TS01, 2.0)]
    assert s.handle(m.ConnectDone(at=100.01)) == []  # connected, but not durable yet: nothing goes on
    assert s.handle(m.AttemptDurable(at=100.02)) == [m.AttemptConnected(TS01), m.StartRelay(NEW, TS01, CR, False)]
    assert s.state is State.RELAY and s.server is TS01 and s.user == "alice"


def test_client_bytes_before_the_backend_is_up_follow_the_cr_in_order() -> None:
    s = machine()
    routing(s, CR + b"\x03\x00")  # the start of the next PDU came with the CR
    assert play(s, m.ClientData(b"\x00\x08"), m.RouteAnswered(NEW, attempted=True, at=0.0),
                m.ClientData(b"more")) == [m.Connect(TS01, 2.0)]
    assert play(s, m.AttemptDurable(at=0.1), m.ConnectDone(at=0.2)) == [  # durable first, connected second: same
        m.AttemptConnected(TS01), m.StartRelay(NEW, TS01, CR + b"\x03\x00\x00\x08more", False)]


def test_a_client_that_sends_too_much_before_the_backend_is_up_is_paused_then_resumed() -> None:
    s = machine()
    routing(s)
    assert s.handle(m.ClientData(b"x" * m.MAX_EARLY_CLIENT_BYTES)) == []
    assert s.handle(m.ClientData(b"y")) == [m.PauseClient()]
    assert s.handle(m.ClientData(b"z")) == []  # paused once; what was in flight is kept
    commands = play(s, m.RouteAnswered(NEW, attempted=True, at=0.0), m.ConnectDone(at=0.1), m.AttemptDurable(at=0.1))
    start = commands[-1]
    assert isinstance(start, m.StartRelay) and start.resume
    assert start.first == CR + b"x" * m.MAX_EARLY_CLIENT_BYTES + b"yz"


def test_the_client_leaving_mid_connect_cancels_it_and_abandons_the_attempt() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(NEW, attempted=True, at=0.0))
    assert s.handle(m.Lost(CLIENT)) == [m.CancelConnect(), m.Finish(False, "client closed")]
    # the cancelled connect and the durable write still come in: the attempt is nobody's fault
    assert play(s, m.ConnectDone("client left during connect", at=0.5), m.AttemptDurable(at=0.5)) == [
        m.AttemptAbandoned(TS01)]
    assert s.state is State.CLOSED


def test_an_abort_mid_connect_resets_the_client_and_the_rest_follows_as_a_client_leaving() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(NEW, attempted=True, at=0.0))
    assert s.handle(m.Aborted("shutdown")) == [m.Close(CLIENT, reset=True)]  # no backend leg yet
    assert play(s, m.Lost(CLIENT, "reset by us"), m.ConnectDone("client left during connect", at=0.5),
                m.AttemptDurable(at=0.5)) == [m.CancelConnect(), m.Finish(False, "shutdown"), m.AttemptAbandoned(TS01)]


def test_the_client_leaving_while_the_route_is_decided_gives_the_attempt_up() -> None:
    s = machine()
    routing(s)
    assert s.handle(m.Lost(CLIENT)) == [m.CancelConnect(), m.Finish(False, "client closed")]
    assert s.handle(m.RouteAnswered(NEW, attempted=True, at=0.0)) == []  # no connect for nobody
    assert s.handle(m.AttemptDurable(at=0.1)) == [m.AttemptAbandoned(TS01)]


def test_a_user_placed_by_another_node_first_is_followed_once() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(NEW, attempted=True, at=10.0))
    s.handle(m.ConnectDone(at=10.25))
    commands = s.handle(m.AttemptDurable(winner=TS02, at=10.5))
    followed = Decision(Reason.STICKY_HIT, sticky_key="alice", pool="farm", candidates=(TS02,),
                        detail="placed on TS02 by another node")
    assert commands == [
        m.AttemptAbandoned(TS01),
        m.Log(logging.INFO, 'user "alice" was placed on TS02 by another balancer first; following'),
        m.Attempt(followed, TS02), m.Connect(TS02, 3.5)]  # what is left of the budget
    # ... and a second disagreement gives up: the table changed again meanwhile
    s.handle(m.ConnectDone(at=10.75))
    assert s.handle(m.AttemptDurable(winner=TS01, at=11.0)) == [
        m.AttemptAbandoned(TS02), m.AllFailed(followed),
        m.Reject("connect-failed", "connect-failed: TS02 unreachable (placed on TS02 by another node)")]
    assert s.state is State.CLOSED


def test_all_attempts_failed_tries_each_candidate_then_forgets_the_assignment() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(NEW, attempted=True, at=10.0))
    # refused half a second in: the last candidate gets the rest of the budget, not all of it again
    assert play(s, m.ConnectDone("connection refused", at=10.5), m.AttemptDurable(at=10.5)) == [
        m.AttemptFailed(TS01, "connection refused"), m.Attempt(NEW, TS02), m.Connect(TS02, 3.5)]
    reject = m.Reject("connect-failed", "connect-failed: TS01, TS02 unreachable (leastconn)")
    assert play(s, m.AttemptDurable(at=10.5), m.ConnectDone("connect timeout after 3.50s", at=14.0)) == [
        m.AttemptFailed(TS02, "connect timeout after 3.50s"), m.AllFailed(NEW), reject]
    # the shell closes the client: its end takes the session out of the registry
    assert s.handle(m.Lost(CLIENT)) == [m.Finish(False, reject.reason)]


TS03 = Server("TS03", "127.0.0.1", 3392)
THREE = Decision(Reason.NEW, sticky_key="alice", pool="farm", candidates=(TS01, TS02, TS03), detail="leastconn")


def test_each_attempt_gets_an_equal_share_of_what_is_left_of_the_connect_budget() -> None:
    """connect_timeout 4 s, three candidates: 4/3 s for the first. Its connect timed out, but the
    durable write answered only 3 s in (a slow store): the second gets (4 - 3) / 2 = 0.5 s, and
    the third what is left then. Every attempt ends by 104.0, the budget's end."""
    s = machine()
    routing(s)
    assert s.handle(m.RouteAnswered(THREE, attempted=True, at=100.0)) == [m.Connect(TS01, 4.0 / 3)]
    assert play(s, m.ConnectDone("connect timeout after 1.33s", at=101.34), m.AttemptDurable(at=103.0)) == [
        m.AttemptFailed(TS01, "connect timeout after 1.33s"), m.Attempt(THREE, TS02), m.Connect(TS02, 0.5)]
    assert play(s, m.ConnectDone("connection refused", at=103.25), m.AttemptDurable(at=103.25)) == [
        m.AttemptFailed(TS02, "connection refused"), m.Attempt(THREE, TS03), m.Connect(TS03, 0.75)]


def test_a_late_attempt_gets_at_least_the_minimum_but_never_past_the_budget() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(THREE, attempted=True, at=100.0))
    # 0.5 s left for two candidates: 0.25 s each would be the minimum anyway
    assert play(s, m.ConnectDone("connection refused", at=103.5), m.AttemptDurable(at=103.5))[-1] == m.Connect(
        TS02, m.MIN_ATTEMPT_TIMEOUT_S)
    # 0.375 s left for one: all of it, not a share of it
    assert play(s, m.ConnectDone("connection refused", at=103.625), m.AttemptDurable(at=103.625))[-1] == m.Connect(
        TS03, 0.375)


def test_a_next_candidate_is_not_tried_once_the_connect_budget_is_spent() -> None:
    """Less than MIN_ATTEMPT_TIMEOUT_S left: the connection ends rather than overrun connect_timeout;
    the client retries, and its next connection has a budget of its own."""
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(THREE, attempted=True, at=100.0))
    reject = m.Reject("connect-failed", "connect-failed: connect budget spent (connect_timeout 4s): TS01 unreachable, "
                                        "TS02, TS03 not tried (leastconn)")
    assert play(s, m.ConnectDone("connect timeout after 1.33s", at=101.34), m.AttemptDurable(at=103.875)) == [
        m.AttemptFailed(TS01, "connect timeout after 1.33s"), m.AllFailed(THREE), reject]
    assert s.state is State.CLOSED and s.server is None
    assert s.handle(m.Lost(CLIENT)) == [m.Finish(False, reject.reason)]


def test_a_connect_timeout_below_the_minimum_is_one_attempt_of_all_of_it() -> None:
    s = machine(RelaySettings(handshake_timeout_s=5.0, connect_timeout_s=0.1))
    routing(s)
    assert s.handle(m.RouteAnswered(NEW, attempted=True, at=0.0)) == [m.Connect(TS01, 0.1)]
    assert play(s, m.ConnectDone("connection refused", at=0.0), m.AttemptDurable(at=0.0)) == [
        m.AttemptFailed(TS01, "connection refused"), m.AllFailed(NEW),
        m.Reject("connect-failed", "connect-failed: connect budget spent (connect_timeout 0.1s): TS01 unreachable, "
                                   "TS02 not tried (leastconn)")]


def test_following_another_node_late_in_the_budget_ends_the_connection_instead() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(NEW, attempted=True, at=10.0))
    s.handle(m.ConnectDone(at=10.25))
    followed = Decision(Reason.STICKY_HIT, sticky_key="alice", pool="farm", candidates=(TS02,),
                        detail="placed on TS02 by another node")
    assert s.handle(m.AttemptDurable(winner=TS02, at=13.875)) == [
        m.AttemptAbandoned(TS01),
        m.Log(logging.INFO, 'user "alice" was placed on TS02 by another balancer first; following'),
        m.AllFailed(followed),  # a sticky hit: nothing of ours to forget, the entry is the other node's
        m.Reject("connect-failed", "connect-failed: connect budget spent (connect_timeout 4s): TS02 not tried "
                                   "(placed on TS02 by another node)")]


def test_a_durable_write_that_fails_fails_the_attempt() -> None:
    s = machine()
    routing(s)
    s.handle(m.RouteAnswered(NEW, attempted=True, at=0.0))
    assert play(s, m.ConnectDone(at=0.1), m.AttemptDurable(unavailable="redis: timeout", at=0.5))[0] == m.AttemptFailed(
        TS01, "control plane unavailable: redis: timeout")


@pytest.mark.parametrize(("refusal", "expected"), [
    ("per-source-rate", "192.0.2.7 connects faster than [limits] per_source_rate (5/s after a burst of 10)"),
    ("max-connections", "[limits] max_connections (100 in this process) reached"),
])
def test_a_limit_refusal_resets_before_any_byte_and_never_registers(refusal: str, expected: str) -> None:
    settings = RelaySettings(limits=LimitSettings(max_connections=100, per_source_rate=5.0, per_source_burst=10))
    s = machine(settings)
    detail = m.refusal_detail(refusal, "192.0.2.7", settings)
    assert detail == expected
    assert play(s, m.ClientConnected(ADDR), m.Admitted(refusal, detail)) == [
        m.Admit("192.0.2.7"), m.Refuse(refusal, detail)]
    assert s.state is State.CLOSED
    assert play(s, m.ClientData(CR), m.Lost(CLIENT)) == []  # nothing registered, nothing to finish


@pytest.mark.parametrize(("reason", "refusal", "detail"), [
    (Reason.LIMITED, Refusal.NEW_USERS, "[limits] new_users_per_second reached"),
    (Reason.PER_USER, Refusal.PER_USER, "user alice has 3 open connection(s)"),
], ids=["new-user-budget", "per-user"])
def test_a_limit_decided_by_the_router_refuses_after_the_cr(reason: Reason, refusal: Refusal, detail: str) -> None:
    s = machine()
    routing(s)
    assert s.handle(m.RouteAnswered(Decision(reason, sticky_key="alice", detail=detail), at=0.0)) == [
        m.Refuse(refusal, f'user "alice": {detail}'), m.Finish(False, "")]


def test_no_server_is_a_rejection_with_the_reason() -> None:
    s = machine()
    routing(s)
    none = Decision(Reason.NO_SERVER, sticky_key="alice", pool="farm", detail="no server of pool farm is up")
    assert s.handle(m.RouteAnswered(none, at=0.0)) == [
        m.Reject("no-server", "no-server: no server of pool farm is up")]


@pytest.mark.parametrize("header", [build_proxy_v1(("203.0.113.9", 4000), ("192.0.2.1", 3389)),
                                    build_proxy_v2(("203.0.113.9", 4000), ("192.0.2.1", 3389))],
                         ids=["v1", "v2"])
def test_a_proxy_header_names_the_client_that_is_admitted_and_routed(header: bytes) -> None:
    settings = RelaySettings(proxy_listeners=frozenset({"0.0.0.0:3389"}),
                             trusted_proxies=(ipaddress.ip_network("192.0.2.0/24"),))
    s = machine(settings)
    assert s.handle(m.ClientConnected(ADDR)) == [m.Register(5.0)]  # the deadline covers the header too
    assert s.handle(m.ClientData(header[:7])) == []
    assert s.handle(m.ClientData(header[7:] + CR)) == [m.Admit("203.0.113.9")]  # the real client's limits
    assert s.handle(m.Admitted()) == [m.HandshakeDone(), m.AskRoute(
        RouteRequest(client_host="203.0.113.9", user_key="alice", listener="0.0.0.0:3389"))]
    assert s.addr == ("203.0.113.9", 4000)


def test_a_proxy_header_from_an_untrusted_address_is_refused() -> None:
    settings = RelaySettings(proxy_listeners=frozenset({"0.0.0.0:3389"}),
                             trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    assert machine(settings).handle(m.ClientConnected(ADDR)) == [m.Refuse(
        "untrusted-proxy", "192.0.2.7 connected to PROXY protocol listener 0.0.0.0:3389 but is not in "
                           "[balancer] trusted_proxies")]


def test_a_malformed_proxy_header_is_rejected_as_malformed() -> None:
    settings = RelaySettings(proxy_listeners=frozenset({"0.0.0.0:3389"}),
                             trusted_proxies=(ipaddress.ip_network("192.0.2.0/24"),))
    s = machine(settings)
    s.handle(m.ClientConnected(ADDR))
    [reject] = s.handle(m.ClientData(b"PROXY BOGUS\r\n"))
    assert isinstance(reject, m.Reject) and reject.count == "malformed" and reject.malformed is not None


def relaying(settings: RelaySettings = SETTINGS) -> m.SessionMachine:
    s = machine(settings)
    routing(s)
    play(s, m.RouteAnswered(NEW, attempted=True, at=0.0), m.ConnectDone(at=0.01), m.AttemptDurable(at=0.01))
    assert s.relaying
    return s


def test_half_close_from_the_client_keeps_the_server_side_open_until_it_closes() -> None:
    s = relaying()
    assert s.handle(m.Eof(CLIENT)) == [m.WriteEof(SERVER)]
    assert s.state is State.RELAY  # the server may still answer
    assert s.handle(m.Eof(SERVER)) == [m.WriteEof(CLIENT), m.Close(CLIENT), m.Close(SERVER)]
    assert s.handle(m.Lost(CLIENT)) == []
    assert s.handle(m.Lost(SERVER)) == [m.Finish(True, "client closed")]


def test_half_close_from_the_server_keeps_the_client_side_open_until_it_closes() -> None:
    s = relaying()
    assert s.handle(m.Eof(SERVER)) == [m.WriteEof(CLIENT)]
    assert s.handle(m.Eof(CLIENT)) == [m.WriteEof(SERVER), m.Close(CLIENT), m.Close(SERVER)]
    assert play(s, m.Lost(SERVER), m.Lost(CLIENT)) == [m.Finish(True, "server closed")]


def test_a_reset_on_one_leg_is_passed_on_as_a_reset() -> None:
    s = relaying()
    assert s.handle(m.Lost(SERVER, "Connection reset by peer")) == [m.Close(CLIENT, reset=True)]
    assert s.handle(m.Lost(CLIENT)) == [m.Finish(True, "server error: Connection reset by peer")]


def test_a_splice_relay_ends_in_one_event() -> None:
    s = relaying(RelaySettings(splice=True))
    assert s.handle(m.RelayEnded(10, 20, "client closed")) == [m.Finish(True, "client closed")]
    assert s.handle(m.Lost(CLIENT)) == []


def test_sessions_accepted_before_a_handoff_are_finished_here() -> None:
    """The handoff's "finish what you accepted": the old process stops accepting, but a connection
    it accepted is served to its end. Nothing in the machine depends on the listener still being
    open: a CR that arrives late is routed and relayed like any other, and only the operator's
    drain deadline (an Aborted) cuts a session."""
    s = machine()
    play(s, m.ClientConnected(ADDR), m.Admitted())
    # ... the listener is handed to the successor here; the client sends its CR afterwards
    assert s.handle(m.ClientData(CR)) == [m.HandshakeDone(), m.AskRoute(ALICE)]
    play(s, m.RouteAnswered(NEW, attempted=True, at=0.0), m.ConnectDone(at=0.01), m.AttemptDurable(at=0.01))
    assert s.relaying
    assert s.handle(m.Aborted("handoff drain timeout")) == [m.Close(CLIENT, reset=True), m.Close(SERVER, reset=True)]
    assert play(s, m.Lost(CLIENT, "reset"), m.Lost(SERVER, "reset")) == [m.Finish(True, "handoff drain timeout")]


def test_the_handshake_deadline_rejects_a_silent_client() -> None:
    s = machine()
    play(s, m.ClientConnected(ADDR), m.Admitted(), m.ClientData(CR[:5]))
    assert s.handle(m.DeadlinePassed()) == [m.Reject("handshake-timeout", "handshake-timeout", "handshake-timeout")]
    assert s.handle(m.Lost(CLIENT)) == [m.Finish(False, "handshake-timeout")]


def test_a_deadline_after_the_cr_is_ignored() -> None:
    s = machine()
    routing(s)
    assert s.handle(m.DeadlinePassed()) == []


def test_a_connect_then_close_is_counted_as_empty_not_logged() -> None:
    s = machine()
    play(s, m.ClientConnected(ADDR), m.Admitted())
    assert s.handle(m.Eof(CLIENT)) == [m.CountEmpty()]
    assert s.handle(m.Lost(CLIENT)) == [m.Finish(False, "closed without sending")]


def test_junk_is_rejected_as_malformed_with_its_kind() -> None:
    s = machine()
    play(s, m.ClientConnected(ADDR), m.Admitted())
    [reject] = s.handle(m.ClientData(b"GET / HTTP/1.1\r\n\r\n"))
    assert isinstance(reject, m.Reject) and reject.count == "malformed"
    assert reject.reason.startswith(f"malformed: {reject.malformed}: ")


def test_a_client_gone_during_the_handshake_is_counted() -> None:
    s = machine()
    play(s, m.ClientConnected(ADDR), m.Admitted(), m.ClientData(CR[:5]))
    assert s.handle(m.Lost(CLIENT, "Connection reset by peer")) == [
        m.Finish(False, "client error: Connection reset by peer", "client-gone")]


def test_an_unknown_event_is_an_error_that_names_it() -> None:
    with pytest.raises(TypeError, match="not an event of the session machine: str"):
        machine().handle("hello")  # type: ignore[arg-type]


def test_a_server_that_closes_after_connecting_but_before_the_write_is_durable_failed() -> None:
    s = machine()
    routing(s)
    play(s, m.RouteAnswered(NEW, attempted=True, at=0.0), m.ConnectDone(at=0.25))
    assert play(s, m.Eof(SERVER), m.Lost(SERVER)) == []  # not relaying: the shell closes the leg
    # the durable answer came a second in: the next candidate gets the 3 s left
    assert s.handle(m.AttemptDurable(at=1.0)) == [m.AttemptFailed(TS01, "closed by server during connect"),
                                                  m.Attempt(NEW, TS02), m.Connect(TS02, 3.0)]


def test_an_ambiguous_truncated_name_is_logged_and_counted() -> None:
    s = machine()
    routing(s)
    decision = Decision(Reason.NEW, sticky_key="alice", pool="farm", candidates=(TS01,), route="r1")
    assert s.handle(m.RouteAnswered(decision, ambiguous=True, attempted=True, at=0.0)) == [
        m.Log(logging.WARNING, 'user "alice" is a truncated name shared by users routed differently; r1 applied',
              "ambiguous"), m.Connect(TS01, 4.0)]


def test_an_abort_of_a_splice_relay_ends_with_the_pump_under_the_abort_reason() -> None:
    s = relaying(RelaySettings(splice=True))
    assert s.handle(m.Aborted("closed by admin")) == [m.Close(CLIENT, reset=True), m.Close(SERVER, reset=True)]
    assert s.handle(m.RelayEnded(5, 6, "client error: reset")) == [m.Finish(True, "closed by admin")]
