"""A stateful property test of the session machine (relay/machine.py): random but legal event
sequences, the invariants checked after every step. Each run serves connections one after another,
as the shell does: once a session is over and everything it started has come back, its books are
checked and the next client connects. At the end of a run the last session is left to what comes
by itself (it must not wait for nothing), then wound down (every answer given, both legs gone),
and its books checked too.

`Shell` plays relay/session.py. It sends only what the shell can send, when it can:

- `Admitted` answers an `Admit` at once, before anything else happens (`Session._admit` is
  synchronous);
- `RouteAnswered` comes once, after `AskRoute`; `attempted` exactly when the decision has
  candidates (the control plane starts the first attempt with its answer; a refusal by the router
  has none);
- `ConnectDone` comes once for each `Connect`, no later than its budget (the connect's own
  timeout) and with "client left during connect" once it was cancelled (`CancelConnect`);
- `AttemptDurable` comes once for each attempt (the route's first one, each `Attempt`), before
  or after the attempt's `ConnectDone`: the shell hands on whichever ends first;
- client data only while the client's transport reads: not once it sent EOF, was closed or
  paused (`PauseClient`), and never while relaying (the legs forward it then); junk only
  during the handshake;
- server ends only from the leg of the current attempt once it connected (a dropped backend's
  are ignored, `Session.leg_event`), and never with the splice relay (no transport);
- `DeadlinePassed` only while the handshake deadline is armed (`Register` to `HandshakeDone`,
  `Reject`, `CountEmpty`, `Refuse` or `Finish`);
- `Aborted` only while the session is registered and not finished (it is found in the registry),
  once here (a second abort finds the legs closing already);
- `RelayEnded` once, with the splice relay, after `StartRelay`; the legs' own ends are not
  reported then (the client's transport was handed over);
- a client can vanish (`Lost`) at any time before that; a leg the shell closed (`Close`,
  `Reject`, `Refuse`, an EOF outside the relay) is reported `Lost` later.

Every event that ends a wait carries the model's clock, which never passes a pending connect's
budget (its timeout would have fired). Everything the shell can send must have a transition in the
state it arrives in: an IllegalEvent fails the run, so this model is what the machine's table
(relay/machine.py `_TRANSITIONS`) is checked against, its explicit no-ops included."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rdpbalancer.policy.model import Decision, Reason, Server
from rdpbalancer.proto.builders import build_connection_request, build_proxy_v1
from rdpbalancer.relay import facts as f
from rdpbalancer.relay import vocabulary as v
from rdpbalancer.relay.machine import MIN_ATTEMPT_TIMEOUT_S, SessionMachine, refusal_detail
from rdpbalancer.relay.vocabulary import State
from rdpbalancer.settings import RelaySettings

CLIENT, SERVER = v.Side.CLIENT, v.Side.SERVER
LISTENER = "0.0.0.0:3389"
SID = "7-42"
FACTS = (f.RouteAsked, f.AttemptStarted, f.Connected, f.AttemptFailed, f.Abandoned, f.AllFailed, f.Relaying)
ADDR = ("192.0.2.7", 50123)
SERVERS = (Server("TS01", "127.0.0.1", 3390), Server("TS02", "127.0.0.1", 3391), Server("TS03", "127.0.0.1", 3392))
ELSEWHERE = Server("TS09", "127.0.0.1", 3399)  # placed there by another balancer
CR = build_connection_request(b"alice")
HEADER = build_proxy_v1(("203.0.113.9", 4000), ("192.0.2.1", 3389))
LOOP_LAG_S = 0.01  # a timeout's callback runs this late at most, in the model
EPSILON = 1e-9
# what the machine may still say once the session is finished: the end of an attempt it gave up
AFTER_FINISH = (f.Abandoned,)
# commands the shell may see answered at once, inside the command (relay/session.Session._do): each
# must end its batch, so that its answer follows every command before it
ANSWERED_AT_ONCE = (v.Admit, v.Connect, v.StartRelay)

DISRUPTIONS = ("early-data", "junk", "client-eof", "client-lost", "server-eof", "server-lost", "deadline", "abort")


@dataclass(frozen=True)
class Config:
    """One connection's circumstances."""

    connect_timeout: float
    listener: str  # plain, proxy, untrusted-proxy
    refusal: str | None  # what [limits] answers the Admit
    splice: bool
    any_order: bool  # the durable answer may come before the connect's end
    trailing: bytes  # what the client sent with its Connection Request
    calm: frozenset[str]  # the disruptions this connection is spared (for variety between them)


CONFIGS = st.builds(
    Config,
    connect_timeout=st.sampled_from([4.0, 4.0, 1.0, 0.6, 0.1]),
    listener=st.sampled_from(["plain"] * 5 + ["proxy"] * 3 + ["untrusted-proxy"]),
    refusal=st.sampled_from([None] * 12 + ["per-source-rate", "max-connections"]),
    splice=st.booleans(), any_order=st.booleans(), trailing=st.sampled_from([b"", b"\x03\x00"]),
    calm=st.frozensets(st.sampled_from(DISRUPTIONS), max_size=3))
ROUTES = st.sampled_from([("new", 3), ("new", 2), ("new", 1), ("sticky", 1), ("ambiguous", 2), ("no-server", 0),
                          ("denied", 0), ("limited", 0), ("per-user", 0), ("unavailable", 0)])
CONNECTS = st.sampled_from(["", "", "connection refused", "timeout", "closed by server during connect"])
DURABLES = st.sampled_from(["none", "none", "winner", "elsewhere", "unavailable"])
steps = st.sampled_from([0.0, 0.0, 0.001, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0]) | st.floats(0.0, 4.0)


@dataclass
class AttemptBook:
    """One attempt as the shell counts it (opened by the route's answer or an `Attempt`)."""

    server: Server
    connected: bool | None = None  # None: no ConnectDone yet (or no connect asked for)
    connect_asked: bool = False
    durable: bool = False  # its AttemptDurable was sent
    outcome: str | None = None  # connected / failed / abandoned
    closed_by_finish: bool = False


@dataclass
class PendingConnect:
    server: Server
    start: float
    budget: float
    cancelled: bool = False


@dataclass
class Books:
    """What the shell counted because the machine said so."""

    admit: int = 0
    admitted: bool = False  # [limits] per-source and handshake slots held (released at Finish)
    handshaking: bool = False
    register: int = 0
    deadline_armed: bool = False
    finish: list[v.Finish] = field(default_factory=list)
    ask_route: int = 0
    all_failed: int = 0
    start_relay: list[v.StartRelay] = field(default_factory=list)
    relaying: bool = False  # the control plane was told (f.Relaying), before the relay starts
    attempts: list[AttemptBook] = field(default_factory=list)
    route_candidates: int = 0
    follows: int = 0


class Shell(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.sessions = 0
        self.broken = False
        self.begin(Config(4.0, "plain", None, False, False, b"", frozenset()))

    def begin(self, config: Config) -> None:
        """A new client connection, on a machine of its own."""
        self.config = config
        trusted = "10.0.0.0/8" if config.listener == "untrusted-proxy" else "192.0.2.0/24"
        self.session = SessionMachine(RelaySettings(
            connect_timeout_s=config.connect_timeout, splice=config.splice,
            proxy_listeners=frozenset({LISTENER}) if config.listener != "plain" else frozenset(),
            trusted_proxies=(ipaddress.ip_network(trusted),)), LISTENER, SID, 1.0)
        self.connect_timeout, self.refusal = config.connect_timeout, config.refusal
        self.splice, self.any_order, self.calm = config.splice, config.any_order, config.calm
        self.started = self.now
        self.books = Books()
        self.history: list[tuple[v.Event, list[v.Command]]] = []
        proxied = config.listener != "plain"
        self.stream = (HEADER if proxied else b"") + CR + config.trailing  # well-formed bytes not sent yet
        self.header_left = len(HEADER) if proxied else 0  # bytes of its PROXY header not sent yet
        self.sent = b""  # the client's own bytes sent (after a PROXY header): relayed first, in order
        self.route_pending = False
        self.route_at: float | None = None
        self.connect: PendingConnect | None = None
        self.connects: list[tuple[float, v.Connect]] = []
        self.client_eof = self.client_closing = self.client_lost = self.client_detached = False
        self.paused = False
        self.server_open = self.server_eof = self.server_closing = False  # the current attempt's leg
        self.relay_ended = False
        self.aborted = False
        self.closed_at: int | None = None  # where in the history the machine was first seen CLOSED

    # -- the shell's side ------------------------------------------------------------------------

    def send(self, event: v.Event) -> None:
        commands = self.session.handle(event)
        self.history.append((event, commands))
        assert not any(isinstance(c, ANSWERED_AT_ONCE) for c in commands[:-1]), (
            f"{commands}: a command answered at once is not the last of its batch")
        finished_before = bool(self.books.finish)
        abandoned = False
        for command in commands:
            if finished_before:
                assert isinstance(command, AFTER_FINISH), f"{command} after the session finished"
            if isinstance(command, f.AttemptStarted) and abandoned:
                self.books.follows += 1  # given up for another balancer's placement, which is tried
            abandoned = abandoned or isinstance(command, f.Abandoned)
            self.carry_out(command)

    def carry_out(self, command: v.Command) -> None:
        books = self.books
        if isinstance(command, FACTS):
            assert command.sid == SID, f"{command} is not keyed by the session's id"
        if isinstance(command, v.Admit):
            books.admit += 1
            assert books.admit == 1, "asked to admit twice"
            if self.refusal is None:
                books.admitted = books.handshaking = True
                self.send(v.Admitted())
            else:
                self.send(v.Admitted(self.refusal, refusal_detail(self.refusal, command.source,
                                                                    self.session.settings)))
        elif isinstance(command, v.Register):
            books.register += 1
            assert books.register == 1, "registered twice"
            books.deadline_armed = True
        elif isinstance(command, v.HandshakeDone | v.CountEmpty):
            self.out_of_handshake()
        elif isinstance(command, v.Refuse | v.Reject):
            self.out_of_handshake()
            if not self.client_lost:
                self.client_closing = True  # reset or closed by the shell: its Lost follows
        elif isinstance(command, f.RouteAsked):
            books.ask_route += 1
            assert books.ask_route == 1, "asked to route twice"
            self.route_pending = True
        elif isinstance(command, f.AttemptStarted):
            assert self.open_attempt() is None, "an attempt started while another is open"
            assert command.server in command.decision.candidates
            books.attempts.append(AttemptBook(command.server))
        elif isinstance(command, v.Connect):
            self.connect_asked(command)
        elif isinstance(command, v.CancelConnect):
            if self.connect is not None:
                self.connect.cancelled = True
        elif isinstance(command, f.Connected | f.AttemptFailed | f.Abandoned):
            self.attempt_ends(command)
        elif isinstance(command, f.AllFailed):
            books.all_failed += 1
            assert books.all_failed == 1, "all failed twice"
            assert self.open_attempt() is None and books.attempts, "all failed with an attempt open, or none made"
            assert books.attempts[-1].outcome in ("failed", "abandoned")
        elif isinstance(command, f.Relaying):
            attempt = books.attempts[-1] if books.attempts else None
            assert attempt is not None and attempt.outcome == "connected" and command.info.server == attempt.server
            assert not books.start_relay and not books.relaying, "relaying told twice, or after the relay started"
            books.relaying = True
        elif isinstance(command, v.PauseClient):
            assert not self.paused and not books.start_relay, "paused twice, or while relaying"
            self.paused = True
        elif isinstance(command, v.StartRelay):
            self.relay_starts(command)
        elif isinstance(command, v.WriteEof):
            assert books.start_relay, "a half-close passed on outside the relay"
        elif isinstance(command, v.Close):
            self.close(command.side)
        elif isinstance(command, v.Finish):
            self.finishes(command)
        else:
            assert isinstance(command, v.Log)

    def out_of_handshake(self) -> None:
        self.books.deadline_armed = False
        self.books.handshaking = False

    def open_attempt(self) -> AttemptBook | None:
        return next((a for a in self.books.attempts if a.outcome is None), None)

    def connect_asked(self, command: v.Connect) -> None:
        assert self.connect is None, "asked to connect while a connect is under way"
        attempt = self.open_attempt()
        assert attempt is not None and attempt.server == command.server and not attempt.connect_asked
        assert self.route_at is not None
        attempt.connect_asked = True
        self.connect = PendingConnect(command.server, self.now, command.budget_s)
        self.connects.append((self.now, command))
        ct = self.connect_timeout
        assert command.budget_s >= min(MIN_ATTEMPT_TIMEOUT_S, ct) - EPSILON, f"{command} below the minimum"
        assert self.now - self.route_at + command.budget_s <= ct + EPSILON, (
            f"{command} at {self.now - self.route_at:.3f}s into a budget of {ct}s ends past it")

    def attempt_ends(self, command: f.Connected | f.AttemptFailed | f.Abandoned) -> None:
        attempt = self.open_attempt()
        assert attempt is not None, f"{command} with no attempt open"
        assert attempt.server == command.server, f"{command} for another attempt's server"
        assert attempt.durable, f"{command} before the attempt is durable"
        assert self.connect is None and (not attempt.connect_asked or attempt.connected is not None), (
            f"{command} before its connect ended")
        if isinstance(command, f.Connected):
            assert attempt.connected, "connected on a failed connect"
            attempt.outcome = "connected"
        else:
            attempt.outcome = "failed" if isinstance(command, f.AttemptFailed) else "abandoned"
            self.server_open = self.server_eof = self.server_closing = False  # the backend is dropped

    def relay_starts(self, command: v.StartRelay) -> None:
        books = self.books
        assert not books.start_relay, "relay started twice"
        assert books.relaying, "the relay started before the control plane was told"
        attempt = books.attempts[-1] if books.attempts else None
        assert attempt is not None and attempt.outcome == "connected" and attempt.server == command.server
        assert command.first == self.sent, "client bytes lost, doubled or reordered before the relay"
        assert command.resume == self.paused, "a client paused for its early bytes is not read again (or the reverse)"
        books.start_relay.append(command)
        self.paused = False
        if self.splice:
            self.client_detached = True  # the splice pump owns both sockets now
            self.server_open = False

    def close(self, side: v.Side) -> None:
        if side is CLIENT:
            if not self.client_lost and not self.client_detached:
                self.client_closing = True
        elif self.server_open:
            self.server_closing = True

    def finishes(self, command: v.Finish) -> None:
        books = self.books
        assert books.register == 1, "finished without being registered"
        books.finish.append(command)
        assert len(books.finish) == 1, "finished twice"
        self.out_of_handshake()
        books.admitted = False
        assert command.relayed == bool(books.start_relay), "relayed or not, the Finish says otherwise"
        if command.relayed:  # the shell's _finish: control.finished undoes the attempt's count
            assert self.session.server is not None and self.session.decision is not None
            relayed = books.attempts[-1]
            assert relayed.outcome == "connected" and relayed.server == self.session.server
            relayed.closed_by_finish = True

    def advance(self, dt: float) -> float:
        """The clock moves on, but never past a pending connect's timeout."""
        later = self.now + dt
        if self.connect is not None:
            later = min(later, self.connect.start + self.connect.budget + LOOP_LAG_S)
        self.now = max(self.now, later)
        return self.now

    # -- the run ----------------------------------------------------------------------------------
    # One rule, `step`, draws what happens next among what the shell could report now: a kind first
    # (moving the connection on 6 times in 10, a disruption 3, nothing 1), then one of that kind.
    # (Hypothesis would turn a random part of separate rules off in each run, and a connection
    # without the answers it waits for gets nowhere; instead each connection is spared a few
    # disruptions, `Config.calm`, for the same variety.)

    @initialize(config=CONFIGS)
    def first_client(self, config: Config) -> None:
        self.broken = True
        self.begin(config)
        self.client_connects()
        self.broken = False

    def client_connects(self) -> None:
        self.sessions += 1
        self.send(v.ClientConnected(ADDR))

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        self.broken = True  # until this step is done: a failure here is the report, not the teardown's
        self.next_step(data)
        self.broken = False

    def next_step(self, data: st.DataObject) -> None:
        if self.over():  # the next client
            self.check_books()
            self.begin(data.draw(CONFIGS, label="config"))
            self.client_connects()
            return
        moving_on, disruptions = self.possible()
        kinds = ["move"] * 6 * bool(moving_on) + ["disrupt"] * 3 * bool(disruptions) + ["time"]
        kind = data.draw(st.sampled_from(kinds), label="kind")
        what = "time" if kind == "time" else data.draw(
            st.sampled_from(moving_on if kind == "move" else disruptions), label="what")
        dt = data.draw(steps, label="dt")
        if what == "handshake":
            self.client_sends(data.draw(st.sampled_from([500, 1, 7, 40]), label="size"), dt)
        elif what == "route":
            self.route_answered(data.draw(ROUTES, label="route"), dt)
        elif what == "connect":
            self.connect_ends(data.draw(CONNECTS, label="connect"), dt)
        elif what == "durable":
            self.durable_answered(data.draw(DURABLES, label="durable"), dt)
        elif what == "relay-ended":
            self.advance(dt)
            self.relay_ended = True
            self.send(v.RelayEnded(10, 20, "client closed"))
        elif what in ("client-closed", "server-closed"):
            self.goes(CLIENT if what == "client-closed" else SERVER, None, dt)
        else:
            self.disrupt(what, data, dt)

    def disrupt(self, what: str, data: st.DataObject, dt: float) -> None:
        if what == "early-data":
            self.client_sends(data.draw(st.sampled_from([70_000, 1, 500, 40_000]), label="size"), dt)
        elif what == "junk":
            self.advance(dt)
            junk = b"GET / HTTP/1.1\r\n\r\n"
            self.sent += junk
            self.send(v.ClientData(junk))
        elif what in ("client-eof", "server-eof"):
            self.half_closes(CLIENT if what == "client-eof" else SERVER, dt)
        elif what in ("client-lost", "server-lost"):
            error = data.draw(st.sampled_from([None, "Connection reset by peer"]), label="error")
            self.goes(CLIENT if what == "client-lost" else SERVER, error, dt)
        elif what == "deadline":
            self.books.deadline_armed = False
            self.now = max(self.now, self.started + self.session.settings.handshake_timeout_s)
            self.send(v.DeadlinePassed())
        elif what == "abort":
            self.advance(dt)
            self.aborted = True
            self.send(v.Aborted(data.draw(st.sampled_from(["shutdown", "closed by admin"]), label="reason")))
        else:
            assert what == "time"
            self.advance(dt)  # nothing happens for a while

    def client_open(self) -> bool:
        """The client's transport reads (a paused one notices no EOF either)."""
        return not (self.client_eof or self.client_closing or self.client_lost or self.client_detached or self.paused)

    def client_reads(self) -> bool:
        """... and its bytes come to the machine: not while relaying (the legs forward them)."""
        return self.client_open() and not self.books.start_relay

    def server_reads(self) -> bool:
        return self.server_open and not (self.server_eof or self.server_closing)

    def durable_due(self) -> bool:
        attempt = self.open_attempt()
        return (attempt is not None and not attempt.durable and not self.route_pending
                and (self.any_order or self.connect is None))

    def pump_runs(self) -> bool:
        return self.splice and bool(self.books.start_relay) and not self.relay_ended

    def possible(self) -> tuple[list[str], list[str]]:
        """What the shell could report now: what moves the connection on, and the disruptions."""
        moving_on = [name for name, ready in (
            ("handshake", bool(self.stream) and self.client_reads()),
            ("route", self.route_pending),
            ("connect", self.connect is not None),
            ("durable", self.durable_due()),
            ("relay-ended", self.pump_runs()),
            ("client-closed", self.client_closing and not self.client_lost and not self.client_detached),
            ("server-closed", self.server_open and self.server_closing),
        ) if ready]
        disruptions = [name for name, ready in (
            ("early-data", self.client_reads() and not self.stream),
            ("junk", self.client_reads() and self.session.state is State.HANDSHAKE and not self.header_left),
            ("client-eof", self.client_open()),
            ("client-lost", not self.client_lost and not self.client_detached),
            ("server-eof", self.server_reads()),
            ("server-lost", self.server_open),
            ("deadline", self.books.deadline_armed),
            ("abort", self.books.register == 1 and not self.books.finish and not self.aborted),
        ) if ready and name not in self.calm]
        return moving_on, disruptions

    def over(self) -> bool:
        """Both legs gone and nothing under way: the shell holds nothing of this connection."""
        return (not self.route_pending and self.connect is None and self.open_attempt() is None
                and (self.client_lost or self.client_detached) and not self.server_open and not self.pump_runs())

    def client_sends(self, size: int, dt: float) -> None:
        self.advance(dt)
        if self.stream:
            data, self.stream = self.stream[:size], self.stream[size:]
        else:
            data = bytes(size)
        header = min(self.header_left, len(data))  # a PROXY header is not the client's to relay
        self.header_left -= header
        self.sent += data[header:]
        self.send(v.ClientData(data))

    def route_answered(self, route: tuple[str, int], dt: float) -> None:
        kind, candidates = route
        self.route_pending = False
        at = self.route_at = self.advance(dt)
        if kind == "unavailable":
            self.send(v.RouteAnswered(None, unavailable="primary gone", at=at))
            return
        if kind in ("new", "sticky", "ambiguous"):
            decision = Decision(Reason.STICKY_HIT if kind == "sticky" else Reason.NEW, sticky_key="alice",
                                pool="farm", candidates=SERVERS[:candidates], detail="leastconn")
            self.books.attempts.append(AttemptBook(decision.candidates[0]))  # started with the answer
            self.books.route_candidates = candidates
            self.send(v.RouteAnswered(decision, ambiguous=kind == "ambiguous", attempted=True, at=at))
            return
        reason = {"no-server": Reason.NO_SERVER, "denied": Reason.DENIED, "limited": Reason.LIMITED,
                  "per-user": Reason.PER_USER}[kind]
        self.send(v.RouteAnswered(Decision(reason, sticky_key="alice", detail=kind), at=at))

    def connect_ends(self, result: str, dt: float) -> None:
        connect = self.connect
        assert connect is not None
        at = self.advance(dt)
        if connect.cancelled:
            result = "client left during connect"
        elif result == "timeout":
            at = self.now = max(self.now, connect.start + connect.budget)
            result = f"connect timeout after {connect.budget:.2f}s"
        self.connect = None
        attempt = self.open_attempt()
        assert attempt is not None
        attempt.connected = result == ""
        if result == "" and not self.splice:
            self.server_open = True  # the backend's leg: its ends come from now on
        self.send(v.ConnectDone(result or None, at=at))

    def durable_answered(self, answer: str, dt: float) -> None:
        attempt = self.open_attempt()
        assert attempt is not None
        attempt.durable = True
        at = self.advance(dt)
        if answer == "unavailable":
            self.send(v.AttemptDurable(unavailable="redis: timeout", at=at))
        elif answer == "none":
            self.send(v.AttemptDurable(at=at))
        else:
            winner = ELSEWHERE if answer == "elsewhere" else next(s for s in SERVERS if s != attempt.server)
            self.send(v.AttemptDurable(winner, at=at))

    def half_closes(self, side: v.Side, dt: float) -> None:
        self.advance(dt)
        closes = not self.books.start_relay  # eof_received answers False outside the relay: it closes
        if side is CLIENT:
            self.client_eof, self.client_closing = True, self.client_closing or closes
        else:
            self.server_eof, self.server_closing = True, self.server_closing or closes
        self.send(v.Eof(side))

    def goes(self, side: v.Side, error: str | None, dt: float) -> None:
        self.advance(dt)
        if side is CLIENT:
            self.client_lost, self.client_closing = True, False
        else:
            self.server_open = self.server_eof = self.server_closing = False
        self.send(v.Lost(side, error))

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def hold_after_each_step(self) -> None:
        self.broken = True
        self.one_at_a_time()
        self.closed_stays_closed()
        self.the_connect_phase_fits_the_budget()
        self.never_stuck()
        self.broken = False

    def one_at_a_time(self) -> None:
        books = self.books
        assert sum(a.outcome is None for a in books.attempts) <= 1, "two attempts open"
        assert books.admit <= 1 and books.register <= 1 and len(books.finish) <= 1
        # each candidate once, and one more to follow another balancer's placement, once
        assert len(books.attempts) <= books.route_candidates + 1, "more attempts than candidates"
        assert books.follows <= 1, "another balancer's placement followed more than once"

    def closed_stays_closed(self) -> None:
        state = self.session.state
        if self.closed_at is not None:
            assert state is State.CLOSED, f"{state} after CLOSED"
            for _event, commands in self.history[self.closed_at:]:
                assert all(isinstance(c, v.Finish | f.Abandoned | v.Close) for c in commands), (
                    f"{commands} once closed")
        elif state is State.CLOSED:
            self.closed_at = len(self.history)

    def the_connect_phase_fits_the_budget(self) -> None:
        if self.route_at is None or not self.connects:
            return
        last_at, last = self.connects[-1]
        assert last_at - self.route_at + last.budget_s <= self.connect_timeout + EPSILON
        assert all(t >= self.route_at for t, _ in self.connects)

    def never_stuck(self) -> None:
        """An unfinished session always waits for something that can still happen."""
        if self.books.register and not self.books.finish:
            assert self.possible()[0] or self.someone_may_still_act(), "the session waits for nothing"

    # -- the end of a connection: its books must balance ------------------------------------------

    def check_books(self) -> None:
        books = self.books
        assert self.session.state is State.CLOSED, self.session.state
        assert books.register == len(books.finish), "registered but never finished (or the reverse)"
        assert not books.admitted and not books.handshaking and not books.deadline_armed
        for attempt in books.attempts:
            assert attempt.outcome is not None, f"an attempt on {attempt.server.name} never ended"
            assert attempt.durable, "an attempt whose durable answer was never awaited"
            if attempt.outcome == "connected":
                assert attempt.closed_by_finish, "a relayed attempt's count never undone"
        opened = len(books.attempts)
        closed = sum(a.outcome in ("failed", "abandoned") or a.closed_by_finish for a in books.attempts)
        assert opened == closed, f"{opened} attempts counted, {closed} undone"
        assert self.connect is None

    def teardown(self) -> None:
        if self.broken:  # a step failed: that failure is the report
            return
        self.settle(self.comes_by_itself)
        self.never_stuck()
        self.settle(self.everyone_leaves)
        self.check_books()

    @staticmethod
    def settle(one: Callable[[], bool]) -> None:
        for _ in range(50):
            if not one():
                return
        raise AssertionError("the session does not wind down")

    def comes_by_itself(self) -> bool:
        """One thing the shell still reports with nobody acting (an answer under way, the end of a
        leg it closed); False when nothing is left."""
        if self.connect is not None:
            self.connect_ends("connection refused", 0.01)
        elif self.route_pending:
            self.route_answered(("unavailable", 0), 0.01)
        elif self.durable_due():
            self.durable_answered("none", 0.01)
        elif self.client_closing and not self.client_lost and not self.client_detached:
            self.goes(CLIENT, None, 0.01)
        elif self.server_open and self.server_closing:
            self.goes(SERVER, None, 0.01)
        else:
            return False
        return True

    def someone_may_still_act(self) -> bool:
        """An unfinished session waits for a party that can still act: a leg still open both ways
        or half-closed towards it, the handshake deadline, the splice relay's pump."""
        client = not (self.client_lost or self.client_eof or self.client_closing or self.client_detached)
        server = self.server_open and not (self.server_eof or self.server_closing)
        return client or server or self.books.deadline_armed or self.pump_runs()

    def everyone_leaves(self) -> bool:
        """Then the client and the server go away: the session must end, its books balanced."""
        if self.comes_by_itself():
            return True
        if not self.client_lost and not self.client_detached:
            self.goes(CLIENT, None, 0.01)
        elif self.server_open:
            self.goes(SERVER, None, 0.01)
        elif self.pump_runs():
            self.relay_ended = True
            self.send(v.RelayEnded(0, 0, "client closed"))
        else:
            return False
        return True


Shell.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None, derandomize=True,
                                   database=None)
test_session_machine_stateful = Shell.TestCase
