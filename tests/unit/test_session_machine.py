"""Playbooks for the session machine (relay/machine.py): exact event -> command sequences, no
sockets, no loop, no clock. Each test is one story a connection can tell; the shell
(relay/session.py) and the component tests check that the commands are carried out, but for the
last test here: an illegal event stops at the shell's edge, in one session."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import pytest

from rdpbalancer.policy.limits import LimitSettings, Refusal
from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.proto.builders import build_connection_request, build_proxy_v1, build_proxy_v2
from rdpbalancer.relay import facts as f
from rdpbalancer.relay import vocabulary as v
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.machine import MAX_EARLY_CLIENT_BYTES, MIN_ATTEMPT_TIMEOUT_S, SessionMachine, refusal_detail
from rdpbalancer.relay.session import ClientSide
from rdpbalancer.relay.vocabulary import State
from rdpbalancer.settings import RelaySettings

CLIENT, SERVER = v.Side.CLIENT, v.Side.SERVER
TS01, TS02 = Server("TS01", "127.0.0.1", 3390), Server("TS02", "127.0.0.1", 3391)
CR = build_connection_request(b"alice")
ADDR = ("192.0.2.7", 50123)
SETTINGS = RelaySettings(handshake_timeout_s=5.0, connect_timeout_s=4.0)
NEW = Decision(Reason.NEW, sticky_key="alice", pool="farm", candidates=(TS01, TS02), detail="leastconn")
ALICE = RouteRequest(client_host=ADDR[0], user_key="alice", listener="0.0.0.0:3389")
SID = "0-1"  # the session's id: every fact the machine emits is keyed by it


def machine(settings: RelaySettings = SETTINGS) -> SessionMachine:
    return SessionMachine(settings, "0.0.0.0:3389", SID, 1.0)


def told_relaying(session: SessionMachine, decision: Decision, server: Server) -> f.Relaying:
    """The fact the machine tells as the relay starts: what the control plane keeps of it."""
    return f.Relaying(SID, f.SessionInfo(decision, server, session.user, session.addr, session.listener, 1.0))


def play(session: SessionMachine, *events: v.Event) -> list[v.Command]:
    """All the commands the events produce, in order."""
    return [command for event in events for command in session.handle(event)]


def routing(session: SessionMachine, cr: bytes = CR) -> None:
    """Through admission and the handshake: the machine asked where to go."""
    assert play(session, v.ClientConnected(ADDR), v.Admitted(), v.ClientData(cr)) == [
        v.Admit("192.0.2.7"), v.Register(5.0), v.HandshakeDone(), f.RouteAsked(SID, ALICE)]
    assert session.state is State.ROUTING


def test_a_new_user_is_admitted_routed_connected_and_relayed() -> None:
    s = machine()
    routing(s)
    assert s.handle(v.RouteAnswered(NEW, attempted=True, at=100.0)) == [v.Connect(TS01, 2.0)]
    assert s.handle(v.ConnectDone(at=100.01)) == []  # connected, but not durable yet: nothing goes on
    assert s.handle(v.AttemptDurable(at=100.02)) == [
        f.Connected(SID, TS01), told_relaying(s, NEW, TS01), v.StartRelay(NEW, TS01, CR, False)]
    assert s.state is State.RELAY and s.server is TS01 and s.user == "alice"


def test_client_bytes_before_the_backend_is_up_follow_the_cr_in_order() -> None:
    s = machine()
    routing(s, CR + b"\x03\x00")  # the start of the next PDU came with the CR
    assert play(s, v.ClientData(b"\x00\x08"), v.RouteAnswered(NEW, attempted=True, at=0.0),
                v.ClientData(b"more")) == [v.Connect(TS01, 2.0)]
    assert play(s, v.AttemptDurable(at=0.1), v.ConnectDone(at=0.2)) == [  # durable first, connected second: same
        f.Connected(SID, TS01), told_relaying(s, NEW, TS01),
        v.StartRelay(NEW, TS01, CR + b"\x03\x00\x00\x08more", False)]


def test_a_client_that_sends_too_much_before_the_backend_is_up_is_paused_then_resumed() -> None:
    s = machine()
    routing(s)
    assert s.handle(v.ClientData(b"x" * MAX_EARLY_CLIENT_BYTES)) == []
    assert s.handle(v.ClientData(b"y")) == [v.PauseClient()]
    assert s.handle(v.ClientData(b"z")) == []  # paused once; what was in flight is kept
    commands = play(s, v.RouteAnswered(NEW, attempted=True, at=0.0), v.ConnectDone(at=0.1), v.AttemptDurable(at=0.1))
    start = commands[-1]
    assert isinstance(start, v.StartRelay) and start.resume
    assert start.first == CR + b"x" * MAX_EARLY_CLIENT_BYTES + b"yz"


def test_the_client_leaving_mid_connect_cancels_it_and_abandons_the_attempt() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=0.0))
    assert s.handle(v.Lost(CLIENT)) == [v.CancelConnect(), v.Finish(False, "client closed")]
    # the cancelled connect and the durable write still come in: the attempt is nobody's fault
    assert play(s, v.ConnectDone("client left during connect", at=0.5), v.AttemptDurable(at=0.5)) == [
        f.Abandoned(SID, TS01)]
    assert s.state is State.CLOSED


def test_an_abort_mid_connect_resets_the_client_and_the_rest_follows_as_a_client_leaving() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=0.0))
    assert s.handle(v.Aborted("shutdown")) == [v.Close(CLIENT, reset=True)]  # no backend leg yet
    assert play(s, v.Lost(CLIENT, "reset by us"), v.ConnectDone("client left during connect", at=0.5),
                v.AttemptDurable(at=0.5)) == [v.CancelConnect(), v.Finish(False, "shutdown"), f.Abandoned(SID, TS01)]


def test_the_client_leaving_while_the_route_is_decided_gives_the_attempt_up() -> None:
    s = machine()
    routing(s)
    assert s.handle(v.Lost(CLIENT)) == [v.CancelConnect(), v.Finish(False, "client closed")]
    assert s.handle(v.RouteAnswered(NEW, attempted=True, at=0.0)) == []  # no connect for nobody
    assert s.handle(v.AttemptDurable(at=0.1)) == [f.Abandoned(SID, TS01)]


def test_a_user_placed_by_another_node_first_is_followed_once() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=10.0))
    s.handle(v.ConnectDone(at=10.25))
    commands = s.handle(v.AttemptDurable(winner=TS02, at=10.5))
    followed = Decision(Reason.STICKY_HIT, sticky_key="alice", pool="farm", candidates=(TS02,),
                        detail="placed on TS02 by another node")
    assert commands == [
        f.Abandoned(SID, TS01),
        v.Log(logging.INFO, 'user "alice" was placed on TS02 by another balancer first; following'),
        f.AttemptStarted(SID, followed, TS02), v.Connect(TS02, 3.5)]  # what is left of the budget
    # ... and a second disagreement gives up: the table changed again meanwhile
    s.handle(v.ConnectDone(at=10.75))
    assert s.handle(v.AttemptDurable(winner=TS01, at=11.0)) == [
        f.Abandoned(SID, TS02), f.AllFailed(SID, followed),
        v.Reject("connect-failed", "connect-failed: TS02 unreachable (placed on TS02 by another node)")]
    assert s.state is State.CLOSED


def test_all_attempts_failed_tries_each_candidate_then_forgets_the_assignment() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=10.0))
    # refused half a second in: the last candidate gets the rest of the budget, not all of it again
    assert play(s, v.ConnectDone("connection refused", at=10.5), v.AttemptDurable(at=10.5)) == [
        f.AttemptFailed(SID, TS01, "connection refused"), f.AttemptStarted(SID, NEW, TS02), v.Connect(TS02, 3.5)]
    reject = v.Reject("connect-failed", "connect-failed: TS01, TS02 unreachable (leastconn)")
    assert play(s, v.AttemptDurable(at=10.5), v.ConnectDone("connect timeout after 3.50s", at=14.0)) == [
        f.AttemptFailed(SID, TS02, "connect timeout after 3.50s"), f.AllFailed(SID, NEW), reject]
    # the shell closes the client: its end takes the session out of the registry
    assert s.handle(v.Lost(CLIENT)) == [v.Finish(False, reject.reason)]


TS03 = Server("TS03", "127.0.0.1", 3392)
THREE = Decision(Reason.NEW, sticky_key="alice", pool="farm", candidates=(TS01, TS02, TS03), detail="leastconn")


def test_each_attempt_gets_an_equal_share_of_what_is_left_of_the_connect_budget() -> None:
    """connect_timeout 4 s, three candidates: 4/3 s for the first. Its connect timed out, but the
    durable write answered only 3 s in (a slow store): the second gets (4 - 3) / 2 = 0.5 s, and
    the third what is left then. Every attempt ends by 104.0, the budget's end."""
    s = machine()
    routing(s)
    assert s.handle(v.RouteAnswered(THREE, attempted=True, at=100.0)) == [v.Connect(TS01, 4.0 / 3)]
    assert play(s, v.ConnectDone("connect timeout after 1.33s", at=101.34), v.AttemptDurable(at=103.0)) == [
        f.AttemptFailed(SID, TS01, "connect timeout after 1.33s"), f.AttemptStarted(SID, THREE, TS02),
        v.Connect(TS02, 0.5)]
    assert play(s, v.ConnectDone("connection refused", at=103.25), v.AttemptDurable(at=103.25)) == [
        f.AttemptFailed(SID, TS02, "connection refused"), f.AttemptStarted(SID, THREE, TS03), v.Connect(TS03, 0.75)]


def test_a_late_attempt_gets_at_least_the_minimum_but_never_past_the_budget() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(THREE, attempted=True, at=100.0))
    # 0.5 s left for two candidates: 0.25 s each would be the minimum anyway
    assert play(s, v.ConnectDone("connection refused", at=103.5), v.AttemptDurable(at=103.5))[-1] == v.Connect(
        TS02, MIN_ATTEMPT_TIMEOUT_S)
    # 0.375 s left for one: all of it, not a share of it
    assert play(s, v.ConnectDone("connection refused", at=103.625), v.AttemptDurable(at=103.625))[-1] == v.Connect(
        TS03, 0.375)


def test_a_next_candidate_is_not_tried_once_the_connect_budget_is_spent() -> None:
    """Less than MIN_ATTEMPT_TIMEOUT_S left: the connection ends rather than overrun connect_timeout;
    the client retries, and its next connection has a budget of its own."""
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(THREE, attempted=True, at=100.0))
    reject = v.Reject("connect-failed", "connect-failed: connect budget spent (connect_timeout 4s): TS01 unreachable, "
                                        "TS02, TS03 not tried (leastconn)")
    assert play(s, v.ConnectDone("connect timeout after 1.33s", at=101.34), v.AttemptDurable(at=103.875)) == [
        f.AttemptFailed(SID, TS01, "connect timeout after 1.33s"), f.AllFailed(SID, THREE), reject]
    assert s.state is State.CLOSED and s.server is None
    assert s.handle(v.Lost(CLIENT)) == [v.Finish(False, reject.reason)]


def test_a_connect_timeout_below_the_minimum_is_one_attempt_of_all_of_it() -> None:
    s = machine(RelaySettings(handshake_timeout_s=5.0, connect_timeout_s=0.1))
    routing(s)
    assert s.handle(v.RouteAnswered(NEW, attempted=True, at=0.0)) == [v.Connect(TS01, 0.1)]
    assert play(s, v.ConnectDone("connection refused", at=0.0), v.AttemptDurable(at=0.0)) == [
        f.AttemptFailed(SID, TS01, "connection refused"), f.AllFailed(SID, NEW),
        v.Reject("connect-failed", "connect-failed: connect budget spent (connect_timeout 0.1s): TS01 unreachable, "
                                   "TS02 not tried (leastconn)")]


def test_following_another_node_late_in_the_budget_ends_the_connection_instead() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=10.0))
    s.handle(v.ConnectDone(at=10.25))
    followed = Decision(Reason.STICKY_HIT, sticky_key="alice", pool="farm", candidates=(TS02,),
                        detail="placed on TS02 by another node")
    assert s.handle(v.AttemptDurable(winner=TS02, at=13.875)) == [
        f.Abandoned(SID, TS01),
        v.Log(logging.INFO, 'user "alice" was placed on TS02 by another balancer first; following'),
        f.AllFailed(SID, followed),  # a sticky hit: nothing of ours to forget, the entry is the other node's
        v.Reject("connect-failed", "connect-failed: connect budget spent (connect_timeout 4s): TS02 not tried "
                                   "(placed on TS02 by another node)")]


def test_a_durable_write_that_fails_fails_the_attempt() -> None:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=0.0))
    assert play(s, v.ConnectDone(at=0.1), v.AttemptDurable(unavailable="redis: timeout", at=0.5))[0] == (
        f.AttemptFailed(SID, TS01, "control plane unavailable: redis: timeout"))


@pytest.mark.parametrize(("refusal", "expected"), [
    ("per-source-rate", "192.0.2.7 connects faster than [limits] per_source_rate (5/s after a burst of 10)"),
    ("max-connections", "[limits] max_connections (100 in this process) reached"),
])
def test_a_limit_refusal_resets_before_any_byte_and_never_registers(refusal: str, expected: str) -> None:
    settings = RelaySettings(limits=LimitSettings(max_connections=100, per_source_rate=5.0, per_source_burst=10))
    s = machine(settings)
    detail = refusal_detail(refusal, "192.0.2.7", settings)
    assert detail == expected
    assert play(s, v.ClientConnected(ADDR), v.Admitted(refusal, detail)) == [
        v.Admit("192.0.2.7"), v.Refuse(refusal, detail)]
    assert s.state is State.CLOSED
    assert s.handle(v.Lost(CLIENT)) == []  # the reset client's end: nothing registered, nothing to finish


@pytest.mark.parametrize(("reason", "refusal", "detail"), [
    (Reason.LIMITED, Refusal.NEW_USERS, "[limits] new_users_per_second reached"),
    (Reason.PER_USER, Refusal.PER_USER, "user alice has 3 open connection(s)"),
], ids=["new-user-budget", "per-user"])
def test_a_limit_decided_by_the_router_refuses_after_the_cr(reason: Reason, refusal: Refusal, detail: str) -> None:
    s = machine()
    routing(s)
    assert s.handle(v.RouteAnswered(Decision(reason, sticky_key="alice", detail=detail), at=0.0)) == [
        v.Refuse(refusal, f'user "alice": {detail}'), v.Finish(False, "")]


def test_no_server_is_a_rejection_with_the_reason() -> None:
    s = machine()
    routing(s)
    none = Decision(Reason.NO_SERVER, sticky_key="alice", pool="farm", detail="no server of pool farm is up")
    assert s.handle(v.RouteAnswered(none, at=0.0)) == [
        v.Reject("no-server", "no-server: no server of pool farm is up")]


@pytest.mark.parametrize("header", [build_proxy_v1(("203.0.113.9", 4000), ("192.0.2.1", 3389)),
                                    build_proxy_v2(("203.0.113.9", 4000), ("192.0.2.1", 3389))],
                         ids=["v1", "v2"])
def test_a_proxy_header_names_the_client_that_is_admitted_and_routed(header: bytes) -> None:
    settings = RelaySettings(proxy_listeners=frozenset({"0.0.0.0:3389"}),
                             trusted_proxies=(ipaddress.ip_network("192.0.2.0/24"),))
    s = machine(settings)
    assert s.handle(v.ClientConnected(ADDR)) == [v.Register(5.0)]  # the deadline covers the header too
    assert s.handle(v.ClientData(header[:7])) == []
    assert s.handle(v.ClientData(header[7:] + CR)) == [v.Admit("203.0.113.9")]  # the real client's limits
    assert s.handle(v.Admitted()) == [v.HandshakeDone(), f.RouteAsked(SID,
        RouteRequest(client_host="203.0.113.9", user_key="alice", listener="0.0.0.0:3389"))]
    assert s.addr == ("203.0.113.9", 4000)


def test_a_proxy_header_from_an_untrusted_address_is_refused() -> None:
    settings = RelaySettings(proxy_listeners=frozenset({"0.0.0.0:3389"}),
                             trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    assert machine(settings).handle(v.ClientConnected(ADDR)) == [v.Refuse(
        "untrusted-proxy", "192.0.2.7 connected to PROXY protocol listener 0.0.0.0:3389 but is not in "
                           "[balancer] trusted_proxies")]


def test_a_malformed_proxy_header_is_rejected_as_malformed() -> None:
    settings = RelaySettings(proxy_listeners=frozenset({"0.0.0.0:3389"}),
                             trusted_proxies=(ipaddress.ip_network("192.0.2.0/24"),))
    s = machine(settings)
    s.handle(v.ClientConnected(ADDR))
    [reject] = s.handle(v.ClientData(b"PROXY BOGUS\r\n"))
    assert isinstance(reject, v.Reject) and reject.count == "malformed" and reject.malformed is not None


def relaying(settings: RelaySettings = SETTINGS) -> SessionMachine:
    s = machine(settings)
    routing(s)
    play(s, v.RouteAnswered(NEW, attempted=True, at=0.0), v.ConnectDone(at=0.01), v.AttemptDurable(at=0.01))
    assert s.relaying
    return s


def test_half_close_from_the_client_keeps_the_server_side_open_until_it_closes() -> None:
    s = relaying()
    assert s.handle(v.Eof(CLIENT)) == [v.WriteEof(SERVER)]
    assert s.state is State.RELAY  # the server may still answer
    assert s.handle(v.Eof(SERVER)) == [v.WriteEof(CLIENT), v.Close(CLIENT), v.Close(SERVER)]
    assert s.handle(v.Lost(CLIENT)) == []
    assert s.handle(v.Lost(SERVER)) == [v.Finish(True, "client closed")]


def test_half_close_from_the_server_keeps_the_client_side_open_until_it_closes() -> None:
    s = relaying()
    assert s.handle(v.Eof(SERVER)) == [v.WriteEof(CLIENT)]
    assert s.handle(v.Eof(CLIENT)) == [v.WriteEof(SERVER), v.Close(CLIENT), v.Close(SERVER)]
    assert play(s, v.Lost(SERVER), v.Lost(CLIENT)) == [v.Finish(True, "server closed")]


def test_a_reset_on_one_leg_is_passed_on_as_a_reset() -> None:
    s = relaying()
    assert s.handle(v.Lost(SERVER, "Connection reset by peer")) == [v.Close(CLIENT, reset=True)]
    assert s.handle(v.Lost(CLIENT)) == [v.Finish(True, "server error: Connection reset by peer")]


def test_a_splice_relay_ends_in_one_event() -> None:
    s = relaying(RelaySettings(splice=True))
    assert s.handle(v.RelayEnded(10, 20, "client closed")) == [v.Finish(True, "client closed")]
    with pytest.raises(v.IllegalEvent):  # the pump owned both sockets: no leg of the shell reports an end
        s.handle(v.Lost(CLIENT))


def test_sessions_accepted_before_a_handoff_are_finished_here() -> None:
    """The handoff's "finish what you accepted": the old process stops accepting, but a connection
    it accepted is served to its end. Nothing in the machine depends on the listener still being
    open: a CR that arrives late is routed and relayed like any other, and only the operator's
    drain deadline (an Aborted) cuts a session."""
    s = machine()
    play(s, v.ClientConnected(ADDR), v.Admitted())
    # ... the listener is handed to the successor here; the client sends its CR afterwards
    assert s.handle(v.ClientData(CR)) == [v.HandshakeDone(), f.RouteAsked(SID, ALICE)]
    play(s, v.RouteAnswered(NEW, attempted=True, at=0.0), v.ConnectDone(at=0.01), v.AttemptDurable(at=0.01))
    assert s.relaying
    assert s.handle(v.Aborted("handoff drain timeout")) == [v.Close(CLIENT, reset=True), v.Close(SERVER, reset=True)]
    assert play(s, v.Lost(CLIENT, "reset"), v.Lost(SERVER, "reset")) == [v.Finish(True, "handoff drain timeout")]


def test_the_handshake_deadline_rejects_a_silent_client() -> None:
    s = machine()
    play(s, v.ClientConnected(ADDR), v.Admitted(), v.ClientData(CR[:5]))
    assert s.handle(v.DeadlinePassed()) == [v.Reject("handshake-timeout", "handshake-timeout", "handshake-timeout")]
    assert s.handle(v.Lost(CLIENT)) == [v.Finish(False, "handshake-timeout")]


def test_a_deadline_after_the_cr_is_illegal() -> None:
    """HandshakeDone cancels the deadline (relay/deadlines.py drops a cancelled entry before it
    fires): one that still comes is a bug of the shell, not a race."""
    s = machine()
    routing(s)
    with pytest.raises(v.IllegalEvent, match="DeadlinePassed is illegal in state ROUTING"):
        s.handle(v.DeadlinePassed())


def test_a_connect_then_close_is_counted_as_empty_not_logged() -> None:
    s = machine()
    play(s, v.ClientConnected(ADDR), v.Admitted())
    assert s.handle(v.Eof(CLIENT)) == [v.CountEmpty()]
    assert s.handle(v.Lost(CLIENT)) == [v.Finish(False, "closed without sending")]


def test_junk_is_rejected_as_malformed_with_its_kind() -> None:
    s = machine()
    play(s, v.ClientConnected(ADDR), v.Admitted())
    [reject] = s.handle(v.ClientData(b"GET / HTTP/1.1\r\n\r\n"))
    assert isinstance(reject, v.Reject) and reject.count == "malformed"
    assert reject.reason.startswith(f"malformed: {reject.malformed}: ")


def test_a_client_gone_during_the_handshake_is_counted() -> None:
    s = machine()
    play(s, v.ClientConnected(ADDR), v.Admitted(), v.ClientData(CR[:5]))
    assert s.handle(v.Lost(CLIENT, "Connection reset by peer")) == [
        v.Finish(False, "client error: Connection reset by peer", "client-gone")]


def test_an_unknown_event_is_an_error_that_names_it() -> None:
    with pytest.raises(TypeError, match="not an event of the session machine: str"):
        machine().handle("hello")  # type: ignore[arg-type]


def test_a_server_that_closes_after_connecting_but_before_the_write_is_durable_failed() -> None:
    s = machine()
    routing(s)
    play(s, v.RouteAnswered(NEW, attempted=True, at=0.0), v.ConnectDone(at=0.25))
    assert play(s, v.Eof(SERVER), v.Lost(SERVER)) == []  # not relaying: the shell closes the leg
    # the durable answer came a second in: the next candidate gets the 3 s left
    assert s.handle(v.AttemptDurable(at=1.0)) == [f.AttemptFailed(SID, TS01, "closed by server during connect"),
                                                  f.AttemptStarted(SID, NEW, TS02), v.Connect(TS02, 3.0)]


def test_an_ambiguous_truncated_name_is_logged_and_counted() -> None:
    s = machine()
    routing(s)
    decision = Decision(Reason.NEW, sticky_key="alice", pool="farm", candidates=(TS01,), route="r1")
    assert s.handle(v.RouteAnswered(decision, ambiguous=True, attempted=True, at=0.0)) == [
        v.Log(logging.WARNING, 'user "alice" is a truncated name shared by users routed differently; r1 applied',
              "ambiguous"), v.Connect(TS01, 4.0)]


def test_an_abort_of_a_splice_relay_ends_with_the_pump_under_the_abort_reason() -> None:
    s = relaying(RelaySettings(splice=True))
    assert s.handle(v.Aborted("closed by admin")) == [v.Close(CLIENT, reset=True), v.Close(SERVER, reset=True)]
    assert s.handle(v.RelayEnded(5, 6, "client error: reset")) == [v.Finish(True, "closed by admin")]


# -- illegal events: an event with no transition in the state it arrives in raises ---------------------

def test_an_illegal_event_raises_naming_the_state_and_the_event_and_changes_nothing() -> None:
    s = relaying()
    before = {name: getattr(s, name) for name in type(s).__slots__}
    with pytest.raises(v.IllegalEvent, match=r"^ClientData is illegal in state RELAY: ClientData\(data=b'x'\)$") as err:
        s.handle(v.ClientData(b"x"))  # the legs forward the client's bytes while relaying
    assert err.value.state is State.RELAY and err.value.event == v.ClientData(b"x")
    assert {name: getattr(s, name) for name in type(s).__slots__} == before
    assert s.handle(v.Aborted("illegal event")) == [v.Close(CLIENT, reset=True), v.Close(SERVER, reset=True)]


def test_an_illegal_event_s_message_is_bounded() -> None:
    s = relaying()
    with pytest.raises(v.IllegalEvent) as err:
        s.handle(v.ClientData(bytes(MAX_EARLY_CLIENT_BYTES)))
    assert len(str(err.value)) < v.MAX_EVENT_TEXT + 100 and str(err.value).endswith("...")


def asked_the_route() -> SessionMachine:
    s = machine()
    routing(s)
    return s


def closed_by_a_reject() -> SessionMachine:
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(Decision(Reason.NO_SERVER, sticky_key="alice", detail="none up"), at=0.0))
    assert s.state is State.CLOSED
    return s


def finished_relay() -> SessionMachine:
    s = relaying()
    play(s, v.Lost(CLIENT), v.Lost(SERVER))
    assert s.state is State.CLOSED
    return s


@pytest.mark.parametrize(("setup", "event"), [
    (machine, v.Eof(SERVER)),  # no backend before the route
    (machine, v.Lost(SERVER)),
    (machine, v.RouteAnswered(NEW, attempted=True, at=0.0)),  # nobody asked
    (machine, v.ConnectDone(at=0.0)),
    (machine, v.RelayEnded(0, 0, "client closed")),
    (asked_the_route, v.Admitted()),  # answered at once
    (asked_the_route, v.ClientConnected(ADDR)),  # once, at the accept
    (asked_the_route, v.ConnectDone(at=0.0)),  # no connect asked for yet
    (asked_the_route, v.AttemptDurable(at=0.0)),
    (asked_the_route, v.RelayEnded(0, 0, "client closed")),  # no relay yet
    (relaying, v.RouteAnswered(NEW, attempted=True, at=0.0)),  # one answer per connection
    (relaying, v.ConnectDone(at=0.0)),
    (relaying, v.DeadlinePassed()),
    (closed_by_a_reject, v.ClientData(b"x")),  # a closed transport reads no more (asyncio and uvloop)
    (closed_by_a_reject, v.Eof(CLIENT)),
    (closed_by_a_reject, v.Lost(SERVER)),  # no attempt was made
    (closed_by_a_reject, v.RouteAnswered(NEW, attempted=True, at=0.0)),  # answered already
    (finished_relay, v.Lost(CLIENT)),  # a leg ends once
    (finished_relay, v.RelayEnded(0, 0, "client closed")),
], ids=lambda x: getattr(x, "__name__", None) or type(x).__name__)
def test_events_the_shell_cannot_send_in_a_state_are_illegal(setup: Callable[[], SessionMachine],
                                                             event: v.Event) -> None:
    s = setup()
    state = s.state
    with pytest.raises(v.IllegalEvent, match=f"^{type(event).__name__} is illegal in state {state.name}: "):
        s.handle(event)
    assert s.state is state


def test_a_second_lost_of_a_relayed_leg_is_illegal() -> None:
    s = relaying()
    s.handle(v.Lost(SERVER))
    with pytest.raises(v.IllegalEvent, match="Lost is illegal in state RELAY"):
        s.handle(v.Lost(SERVER))


# -- the explicit no-ops: events the shell can send when they change nothing, each said why -------------

def test_an_eof_from_either_leg_while_routing_waits_for_its_lost() -> None:
    """The shell closes a leg that sent EOF outside the relay; the Lost is what counts."""
    s = machine()
    routing(s)
    play(s, v.RouteAnswered(NEW, attempted=True, at=0.0), v.ConnectDone(at=0.1))
    assert s.handle(v.Eof(SERVER)) == []
    assert s.handle(v.Eof(CLIENT)) == []
    assert s.handle(v.Lost(CLIENT)) == [v.CancelConnect(), v.Finish(False, "client closed")]


def test_a_backend_that_closes_before_its_connect_is_reported_is_left_to_the_connect() -> None:
    """Connected, then closed before the connect's callback ran: the shell's connect sees the
    closed leg and reports it as the attempt's error."""
    s = machine()
    routing(s)
    s.handle(v.RouteAnswered(NEW, attempted=True, at=0.0))
    assert s.handle(v.Lost(SERVER)) == []
    assert play(s, v.ConnectDone("closed by server during connect", at=0.1), v.AttemptDurable(at=0.1)) == [
        f.AttemptFailed(SID, TS01, "closed by server during connect"), f.AttemptStarted(SID, NEW, TS02),
        v.Connect(TS02, 3.9)]


def test_an_answer_without_an_attempt_after_the_client_left_is_a_no_op() -> None:
    s = machine()
    routing(s)
    s.handle(v.Lost(CLIENT))
    none = Decision(Reason.NO_SERVER, sticky_key="alice", pool="farm", detail="no server of pool farm is up")
    assert s.handle(v.RouteAnswered(none, at=0.0)) == []
    assert s.state is State.CLOSED


def test_the_backend_of_an_attempt_the_client_left_may_end_before_the_attempt_is_judged() -> None:
    s = machine()
    routing(s)
    play(s, v.RouteAnswered(NEW, attempted=True, at=0.0), v.Lost(CLIENT))
    assert s.handle(v.ConnectDone(at=0.1)) == []  # connected before the cancel took effect
    assert play(s, v.Eof(SERVER), v.Lost(SERVER)) == []
    assert s.handle(v.AttemptDurable(at=0.2)) == [f.Abandoned(SID, TS01)]
    with pytest.raises(v.IllegalEvent):  # the shell dropped that leg with the attempt
        s.handle(v.Lost(SERVER))


def test_an_abort_that_finds_the_session_over_does_nothing() -> None:
    """An operator or the shutdown may cut a session at any time."""
    s = finished_relay()
    assert s.handle(v.Aborted("shutdown")) == []


# -- the shell's edge: an illegal event is logged, counted and cuts that session, nothing more --------

class FakeTransport:
    """Just what the shell calls on a client transport before any byte."""

    def __init__(self) -> None:
        self.reset = self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ADDR if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.reset = self.closing = True


async def test_the_shell_logs_counts_and_cuts_a_session_on_an_illegal_event(caplog: pytest.LogCaptureFixture) -> None:
    ctx = RelayContext(control=None, settings=SETTINGS)  # type: ignore[arg-type]  # no route is asked for
    client, transport = ClientSide(ctx, "0.0.0.0:3389"), FakeTransport()
    client.connection_made(transport)  # type: ignore[arg-type]
    session = client.session
    assert ctx.sessions == {session.id: session}
    with caplog.at_level(logging.ERROR, logger="rdpbalancer.session"):
        assert session.leg_event(session.backend, v.Eof(SERVER)) is False  # no backend during the handshake
    [record] = caplog.records
    assert record.getMessage().startswith(f"session={session.id} Eof is illegal in state HANDSHAKE: ")
    assert ctx.stats.connections["illegal-event"] == 1
    assert transport.reset  # cut: the client is reset, and its end finishes the session
    client.connection_lost(None)
    assert ctx.sessions == {} and session.end_reason == "illegal event"
    assert ctx.admission.handshaking == 0  # its limits released
