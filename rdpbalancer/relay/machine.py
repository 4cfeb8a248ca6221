"""One connection's life as a sans-IO state machine (mitmproxy's layers, h11's Connection).

Past-tense events go in (`handle(event)`); imperative commands come out, in order; the shell
(relay/session.py) owns the transports, descriptors and timers and turns each command into
calls. Relay bytes never pass through here: once relaying, the pumps move them, and only ends
(EOF, a lost leg, the splice pump's end) come back as events.

    HANDSHAKE --CR--> ROUTING --connected + durable--> RELAY --both sides gone--> CLOSED
        \\--junk/timeout/EOF/limit--> CLOSED  \\--no server/denied/all attempts failed--> CLOSED

Time is the events' business: the machine never reads a clock. Every event that ends a wait the
connect budget depends on carries its time (`at`, monotonic seconds, `time.monotonic()` in the
shell): `RouteAnswered.at` starts the budget of `connect_timeout`, `ConnectDone.at` and
`AttemptDurable.at` say when an attempt ended, and each `Connect` says how long its attempt may
take. All the attempts of one connection fit in the budget (see `SessionMachine._attempt_next`).

The vocabulary (events, commands, `State`, `IllegalEvent`) is relay/vocabulary.py; this module is
the transitions, stated per state in one table (`_TRANSITIONS`, h11's `_state.py`). An event that
has no transition in the state it arrives in raises IllegalEvent: none is dropped silently. The
events the shell can send when there is nothing to do are named no-ops, each saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from rdpbalancer.policy.identity import printable, user_key
from rdpbalancer.policy.limits import Refusal, source_of
from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.policy.placement import AttemptOutcome, follow_winner, judge_attempt
from rdpbalancer.proto import ClientHandshake, ConnectionRequestReceived, ProtocolError
from rdpbalancer.proto.errors import EOF as EOF_KIND
from rdpbalancer.proto.proxy import parse_proxy_header
from rdpbalancer.relay.facts import (
    Abandoned,
    AllFailed,
    AttemptFailed,
    AttemptStarted,
    Connected,
    Relaying,
    RouteAsked,
    SessionInfo,
)
from rdpbalancer.relay.vocabulary import (
    BOTH,
    INFO,
    NEITHER,
    WARNING,
    Aborted,
    Admit,
    Admitted,
    AttemptDurable,
    CancelConnect,
    ClientConnected,
    ClientData,
    Close,
    Command,
    Connect,
    ConnectDone,
    CountEmpty,
    DeadlinePassed,
    Eof,
    Event,
    Finish,
    HandshakeDone,
    IllegalEvent,
    Log,
    Lost,
    PauseClient,
    Refuse,
    Register,
    Reject,
    RelayEnded,
    RouteAnswered,
    Side,
    StartRelay,
    State,
    WriteEof,
)
from rdpbalancer.settings import RelaySettings

# never give a connect attempt less than this: a next candidate is not tried once less is left
MIN_ATTEMPT_TIMEOUT_S = 0.25
# Client bytes after its Connection Request, held while a server is chosen and reached. The client
# is still read meanwhile so that its leaving is noticed at once (a paused transport sees no EOF or
# reset); a client normally waits for the Confirm, so beyond this it is paused until the relay.
MAX_EARLY_CLIENT_BYTES = 64 * 1024


_REFUSAL_DETAIL = {
    Refusal.MAX_CONNECTIONS: "[limits] max_connections ({limits.max_connections} in this process) reached",
    Refusal.MAX_HANDSHAKES: "[limits] max_handshakes ({limits.max_handshakes} in this process) reached",
    Refusal.SOURCE_CONNECTIONS: "{source} has [limits] per_source_connections "
                                "({limits.per_source_connections}) open",
    Refusal.SOURCE_RATE: "{source} connects faster than [limits] per_source_rate "
                         "({limits.per_source_rate:g}/s after a burst of {limits.per_source_burst})",
}


def refusal_detail(refusal: str, source: str, settings: RelaySettings) -> str:
    return _REFUSAL_DETAIL[Refusal(refusal)].format(source=source, limits=settings.limits)


class SessionMachine:
    """The decisions of one connection; `handle` returns what the shell must do, in order."""

    __slots__ = ("_attempt", "_client_left", "_closing", "_connect_end", "_cr", "_deadline", "_durable_end",
                 "_early", "_eof", "_finished", "_followed", "_gone", "_handshake", "_paused", "_proxy",
                 "_registered", "addr", "decision", "end_reason", "listener", "server", "settings", "sid",
                 "started_wall", "state", "user")

    def __init__(self, settings: RelaySettings, listener: str, sid: str, started_wall: float) -> None:
        """`sid`: the session's id, which keys the facts it emits; `started_wall`: when the client
        connected (wall clock, for the API; the machine reads no clock)."""
        self.settings, self.listener = settings, listener
        self.sid, self.started_wall = sid, started_wall
        self.state = State.HANDSHAKE
        self.addr: tuple[str, int] = ("unknown", 0)
        self.user: str | None = None
        self.decision: Decision | None = None
        self.server: Server | None = None  # the current attempt's, then the relay's
        self.end_reason = ""
        self._handshake: ClientHandshake | None = ClientHandshake()  # dropped once the CR is in
        self._proxy: bytearray | None = None  # a PROXY listener: bytes until the header is complete
        self._cr = b""  # the Connection Request and what came with it
        self._early = b""  # bytes, not a bytearray: an idle session keeps no buffer of its own
        self._paused = False
        self._deadline = 0.0  # monotonic end of the connect budget (RouteAnswered.at + connect_timeout)
        self._attempt = 0  # index of the current candidate
        self._followed = False  # another node's winner followed once already
        # the current attempt's two halves, each None until it is in (`_judge` waits for both)
        self._connect_end: ConnectDone | None = None
        self._durable_end: AttemptDurable | None = None
        self._client_left = False
        # frozensets, starting as the shared empty one: three empty sets would cost 648 bytes for
        # every idle session, and these change only at its end
        self._eof: frozenset[Side] = NEITHER
        self._gone: frozenset[Side] = NEITHER
        self._closing: frozenset[Side] = NEITHER  # a Close was asked for (the leg's end follows as Lost)
        self._registered = False  # in the registry (once admitted, or at once on a PROXY listener)
        self._finished = False

    @property
    def relaying(self) -> bool:
        return self.state is State.RELAY

    def user_text(self) -> str:
        return f'"{printable(self.user)}"' if self.user is not None else "-"

    # -- the one door -----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        """The transition of `event` in the current state (`_TRANSITIONS`). IllegalEvent, the
        machine untouched, if it has none, or if its handler finds it impossible by the machine's
        own record (a second route answer, a leg that ends twice): each raises before it changes
        anything."""
        kind = type(event)
        key: object = (kind, event.side) if isinstance(event, Eof | Lost) else kind
        handler = _TRANSITIONS[self.state].get(key)
        if handler is None:
            if kind not in _EVENTS:
                raise TypeError(f"not an event of the session machine: {kind.__name__}")
            raise IllegalEvent(self.state, event)
        return handler(self, event)

    def _illegal(self, event: Event) -> IllegalEvent:
        return IllegalEvent(self.state, event)

    # -- HANDSHAKE: admission, PROXY, the Connection Request ----------------------------------------

    def _connected_client(self, event: ClientConnected) -> list[Command]:
        self.addr = addr = event.addr
        if self.listener in self.settings.proxy_listeners:
            if not _trusted(addr[0], self.settings.trusted_proxies):
                self.state = State.CLOSED
                return [Refuse("untrusted-proxy", f"{addr[0]} connected to PROXY protocol listener "
                                                  f"{self.listener} but is not in [balancer] trusted_proxies")]
            self._proxy = bytearray()  # admitted once the header names the real client
            self._registered = True
            return [Register(self.settings.handshake_timeout_s)]
        return [Admit(source_of(addr[0]))]

    def _admitted(self, event: Admitted) -> list[Command]:
        if event.refusal is not None:
            self.state = State.CLOSED
            refuse = Refuse(event.refusal, event.detail)
            return [refuse, *self._finish_once()] if self._registered else [refuse]
        commands: list[Command] = []
        if not self._registered:
            self._registered = True
            commands.append(Register(self.settings.handshake_timeout_s))
        if self._early:  # after a PROXY header: the client's own first bytes
            rest, self._early = self._early, b""
            commands += self._feed(rest)
        return commands

    def _handshake_data(self, event: ClientData) -> list[Command]:
        if self._proxy is not None:
            return self._feed_proxy(event.data)
        return self._feed(event.data)

    def _feed_proxy(self, data: bytes) -> list[Command]:
        """A trusted proxy's PROXY v1/v2 header, then the client's own bytes."""
        assert self._proxy is not None
        buffer = self._proxy
        buffer += data
        try:
            header = parse_proxy_header(buffer)  # bounded: refuses past MAX_PROXY_HEADER_BYTES
        except ProtocolError as exc:
            return self._malformed(exc)
        if header is None:
            return []  # not complete yet: the handshake deadline bounds the wait
        self._proxy = None
        if header.source is not None:  # None: LOCAL/UNKNOWN (the proxy's own check): the proxy it is
            self.addr = header.source
        self._early = bytes(buffer[header.length:])  # fed once admitted
        return [Admit(source_of(self.addr[0]))]

    def _feed(self, data: bytes) -> list[Command]:
        handshake = self._handshake
        assert handshake is not None  # dropped with the move to ROUTING
        try:
            handshake.receive_data(data)
            event = handshake.next_event()
        except ProtocolError as exc:
            return self._malformed(exc)
        if not isinstance(event, ConnectionRequestReceived):
            return []  # NeedData: the handshake deadline bounds the wait
        cr = event.request
        self.state = State.ROUTING  # the client is still read: its leaving is noticed at once
        self._cr = cr.raw + handshake.trailing_data
        self._handshake = None
        key = user_key(cr.cookie, strip_domain=self.settings.strip_domain) if cr.cookie is not None else None
        self.user = key
        request = RouteRequest(client_host=self.addr[0], user_key=key, msts_target=cr.msts_target,
                               collection=cr.collection, listener=self.listener)
        return [HandshakeDone(), RouteAsked(self.sid, request)]

    def _client_eof_in_handshake(self, _event: Eof) -> list[Command]:
        return self._feed(b"")  # EOF before a full CR: the parser reports it

    def _malformed(self, exc: ProtocolError) -> list[Command]:
        self.state = State.CLOSED
        if exc.kind == EOF_KIND:
            # connect-then-close without a byte: a TCP health check (keepalived, another load
            # balancer, a port scan). Counted, but not logged at info level: it is not an error.
            self.end_reason = "closed without sending"
            return [CountEmpty()]
        return self._reject_client(f"malformed: {exc.kind}: {exc}", "malformed", malformed=exc.kind)

    def _expired(self, _event: DeadlinePassed) -> list[Command]:
        return self._reject_client("handshake-timeout", "handshake-timeout", malformed="handshake-timeout")

    def _client_gone_in_handshake(self, event: Lost) -> list[Command]:
        self._gone_reason(event)
        self.state = State.CLOSED
        return self._finish_once(count="client-gone")

    def _reject_client(self, reason: str, count: str, *, malformed: str | None = None) -> list[Command]:
        """Close the client with a reason; its Lost follows and finishes the session (CLOSED)."""
        self.end_reason = reason
        self.state = State.CLOSED
        return [Reject(count, reason, malformed)]

    # -- ROUTING: the decision, then the attempts --------------------------------------------------

    def _early_data(self, event: ClientData) -> list[Command]:
        self._early += event.data  # forwarded after the CR once relaying
        if len(self._early) > MAX_EARLY_CLIENT_BYTES and not self._paused:
            self._paused = True
            return [PauseClient()]
        return []

    def _decided(self, answer: RouteAnswered) -> list[Command]:
        if self.decision is not None:  # one answer per connection
            raise self._illegal(answer)
        if answer.unavailable is not None or answer.decision is None:
            return self._reject_client(f"unavailable: {answer.unavailable}", "unavailable")
        decision = self.decision = answer.decision
        if decision.reason is Reason.LIMITED or decision.reason is Reason.PER_USER:
            self.state = State.CLOSED
            refusal = Refusal.NEW_USERS if decision.reason is Reason.LIMITED else Refusal.PER_USER
            return [Refuse(refusal, f"user {self.user_text()}: {decision.detail}"), *self._finish_once()]
        if not answer.attempted:
            return self._reject_client(f"{decision.reason}: {decision.detail}", str(decision.reason))
        commands: list[Command] = []
        if answer.ambiguous:
            commands.append(Log(WARNING, f"user {self.user_text()} is a truncated name shared by users "
                                                 f"routed differently; {decision.route} applied", "ambiguous"))
        self._deadline = answer.at + self.settings.connect_timeout_s
        self._attempt = 0
        return commands + self._attempt_next(answer.at, started=True)

    def _attempt_next(self, now: float, *, started: bool) -> list[Command]:
        """The attempt on candidate `_attempt`, starting at `now` (the time of the event that
        ended the previous one). It gets an equal share of what is left of the budget for the
        candidates not yet tried, at least MIN_ATTEMPT_TIMEOUT_S, and never past the budget's
        end: all the attempts of a connection fit in connect_timeout. A later attempt that would
        get less than MIN_ATTEMPT_TIMEOUT_S is not started: the budget is spent. The first one
        (`started`: the control plane began it with its answer, at the start of the budget) gets
        its share, or all of connect_timeout if that is less than MIN_ATTEMPT_TIMEOUT_S."""
        assert self.decision is not None
        candidates = self.decision.candidates
        remaining = self._deadline - now
        if not started and remaining < MIN_ATTEMPT_TIMEOUT_S:
            return self._all_failed(spent=True)
        server = self.server = candidates[self._attempt]
        self._connect_end, self._durable_end = None, None
        budget = min(remaining, max(MIN_ATTEMPT_TIMEOUT_S, remaining / (len(candidates) - self._attempt)))
        commands: list[Command] = [] if started else [AttemptStarted(self.sid, self.decision, server)]
        return [*commands, Connect(server, budget)]

    def _connect_done(self, event: ConnectDone) -> list[Command]:
        if self.server is None or self._connect_end is not None:  # one per Connect
            raise self._illegal(event)
        self._connect_end = event
        return self._judge(event.at)

    def _attempt_durable(self, event: AttemptDurable) -> list[Command]:
        if self.server is None or self._durable_end is not None:  # one per attempt
            raise self._illegal(event)
        self._durable_end = event
        return self._judge(event.at)

    def _judge(self, now: float) -> list[Command]:
        """Both halves of an attempt are in (the connect, the durable assignment; the later came
        at `now`): what next. Until then, nothing: the other half is on its way."""
        connect, durable = self._connect_end, self._durable_end
        if connect is None or durable is None:
            return []
        server = self.server
        assert server is not None and self.decision is not None
        error = connect.error or (f"control plane unavailable: {durable.unavailable}"
                                  if durable.unavailable is not None else "")
        if durable.winner is not None and not self._client_left:
            return self._follow(server, durable.winner, now)
        outcome = judge_attempt(error=error, client_left=self._client_left)
        if outcome is AttemptOutcome.ABANDONED:
            self.server = None
            return [Abandoned(self.sid, server)]
        if outcome is AttemptOutcome.FAILED:
            self.server = None
            failed: list[Command] = [AttemptFailed(self.sid, server, error)]
            if self._attempt + 1 < len(self.decision.candidates):
                self._attempt += 1
                return failed + self._attempt_next(now, started=False)
            return failed + self._all_failed()
        self.state = State.RELAY
        first, self._early, self._cr = self._cr + self._early, b"", b""
        resume, self._paused = self._paused, False
        info = SessionInfo(self.decision, server, self.user, self.addr, self.listener, self.started_wall)
        return [Connected(self.sid, server), Relaying(self.sid, info),
                StartRelay(self.decision, server, first, resume)]

    def _follow(self, server: Server, winner: Server, now: float) -> list[Command]:
        """Another node placed the user on `winner` first: follow it, once."""
        assert self.decision is not None
        follow = follow_winner(self.decision, winner, self._followed)
        commands: list[Command] = [Abandoned(self.sid, server)]
        if follow is None:
            return commands + self._all_failed()
        self._followed, self.decision, self._attempt = True, follow, 0
        return [*commands, Log(INFO, f"user {self.user_text()} was placed on {winner.name} by "
                                             "another balancer first; following"),
                *self._attempt_next(now, started=False)]

    def _all_failed(self, *, spent: bool = False) -> list[Command]:
        """Every candidate failed, or (`spent`) the budget is spent before candidate `_attempt`."""
        assert self.decision is not None
        decision = self.decision
        names = [s.name for s in decision.candidates]
        if spent:
            self.server = None
            tried, untried = names[:self._attempt], names[self._attempt:]
            what = (f"{', '.join(tried)} unreachable, " if tried else "") + f"{', '.join(untried)} not tried"
            reason = (f"connect-failed: connect budget spent (connect_timeout "
                      f"{self.settings.connect_timeout_s:g}s): {what} ({decision.detail})")
        else:
            reason = f"connect-failed: {', '.join(names)} unreachable ({decision.detail})"
        return [AllFailed(self.sid, decision), *self._reject_client(reason, "connect-failed")]

    def _leg_closing(self, _event: Eof) -> list[Command]:
        """No-op. Outside the relay a leg that sends EOF is closed by the shell (its eof_received
        answers False); the Lost that follows is the event that counts."""
        return []

    def _client_gone_while_routing(self, event: Lost) -> list[Command]:
        """Routing notices and gives up: the connect is cancelled; what is under way (the route's
        answer, the attempt's connect and durable write) still comes back, in CLOSED."""
        self._gone_reason(event)
        self.state = State.CLOSED
        self._client_left = True
        return [CancelConnect(), *self._finish_once()]

    def _server_gone_while_routing(self, _event: Lost) -> list[Command]:
        """The current attempt's backend closed before the relay. Connected but not yet durable:
        the attempt failed. Before its ConnectDone (the connect finished, its callback had not run
        yet), the shell's connect sees the closed leg and says so itself: a no-op here."""
        if self._connect_end is not None and self._connect_end.error is None:
            self._connect_end = ConnectDone("closed by server during connect", at=self._connect_end.at)
        return []

    # -- RELAY: half-close and teardown ------------------------------------------------------------

    def _half_close(self, event: Eof) -> list[Command]:
        side = event.side
        self._eof = self._eof | {side}
        commands: list[Command] = [WriteEof(_other(side))]
        if self._eof == BOTH:
            commands += self._close_sides(Side.CLIENT, Side.SERVER)
        return commands

    def _lost_in_relay(self, event: Lost) -> list[Command]:
        side = event.side
        if side in self._gone:  # a leg ends once
            raise self._illegal(event)
        self._gone_reason(event)
        other = _other(side)
        commands = self._close_sides(other, reset=event.error is not None and other not in self._closing)
        return commands + self._finish_once() if self._gone == BOTH else commands

    def _relay_ended(self, event: RelayEnded) -> list[Command]:
        self.end_reason = self.end_reason or event.reason
        self._gone = BOTH
        return self._finish_once()

    def _abort_relay(self, event: Aborted) -> list[Command]:
        self.end_reason = self.end_reason or event.reason
        return self._close_sides(Side.CLIENT, Side.SERVER, reset=True)

    # -- CLOSED: what is still under way comes back ------------------------------------------------

    def _answered_after_client_left(self, answer: RouteAnswered) -> list[Command]:
        """The client left while the control plane decided. An attempt it started with its answer
        is given up (its durable answer follows, then Abandoned); else a no-op: nothing
        was started for nobody."""
        if self.decision is not None or not self._client_left:  # one answer, and only after that
            raise self._illegal(answer)
        if answer.decision is not None and answer.attempted and answer.decision.candidates:
            self.decision, self.server = answer.decision, answer.decision.candidates[0]
            self._connect_end = ConnectDone("client left before connect", at=answer.at)
            return self._judge(answer.at)
        return []

    def _client_gone_after_close(self, event: Lost) -> list[Command]:
        """A Reject or a Refuse closed the client: its end takes the session out of the registry
        (nothing to do for a refusal that came before registering)."""
        if Side.CLIENT in self._gone:
            raise self._illegal(event)
        self._gone_reason(event)
        return self._finish_once()

    def _given_up_backend_ends(self, event: Eof | Lost) -> list[Command]:
        """No-op. The backend of an attempt the client left: its connect completed before the
        cancel took effect, and the leg ends before the attempt's answers are in (Abandoned
        follows them, and the shell drops the leg then)."""
        if not self._client_left or self.server is None:
            raise self._illegal(event)
        return []

    # -- any state ---------------------------------------------------------------------------------

    def _abort(self, event: Aborted) -> list[Command]:
        """Cut it now: reset the client (outside the relay there is no backend leg to pass it on
        to). Legal in every state: an operator or the shutdown may cut a session at any time, and
        one that has closed its legs already finds nothing more to do."""
        self.end_reason = self.end_reason or event.reason
        return self._close_sides(Side.CLIENT, reset=True)

    def _close_sides(self, *sides: Side, reset: bool = False) -> list[Command]:
        """Close each side not gone and not closing already (an abort's reset overrides a FIN)."""
        wanted = [side for side in sides if side not in self._gone and (reset or side not in self._closing)]
        self._closing = self._closing.union(wanted)
        return [Close(side, reset=reset) for side in wanted]

    def _gone_reason(self, event: Lost) -> None:
        side = event.side
        self._gone = self._gone | {side}
        if not self.end_reason:
            self.end_reason = f"{side.value} closed" if event.error is None else f"{side.value} error: {event.error}"

    def _finish_once(self, count: str = "") -> list[Command]:
        """Leave the registry, once; a connection refused before it registered never joined it."""
        if self._finished or not self._registered:
            return []
        self._finished = True
        relayed = self.state is State.RELAY
        self.state = State.CLOSED
        return [Finish(relayed, self.end_reason, count)]


Handler = Callable[[SessionMachine, Any], list[Command]]
M = SessionMachine
CLIENT, SERVER = Side.CLIENT, Side.SERVER

# The transitions, stated per state (h11's _state.py): state -> event -> its handler, which may
# move the machine to another state. Eof and Lost are keyed by their side too. An event missing
# from its state's row raises IllegalEvent: nothing is dropped silently. The no-ops are named, and
# each says why the shell can send that event then.
_TRANSITIONS: dict[State, dict[object, Handler]] = {
    State.HANDSHAKE: {
        ClientConnected: M._connected_client,
        Admitted: M._admitted,
        ClientData: M._handshake_data,
        (Eof, CLIENT): M._client_eof_in_handshake,
        (Lost, CLIENT): M._client_gone_in_handshake,
        DeadlinePassed: M._expired,
        Aborted: M._abort,
    },
    State.ROUTING: {
        ClientData: M._early_data,
        RouteAnswered: M._decided,
        ConnectDone: M._connect_done,
        AttemptDurable: M._attempt_durable,
        (Eof, CLIENT): M._leg_closing,
        (Eof, SERVER): M._leg_closing,
        (Lost, CLIENT): M._client_gone_while_routing,
        (Lost, SERVER): M._server_gone_while_routing,
        Aborted: M._abort,
    },
    State.RELAY: {
        (Eof, CLIENT): M._half_close,
        (Eof, SERVER): M._half_close,
        (Lost, CLIENT): M._lost_in_relay,
        (Lost, SERVER): M._lost_in_relay,
        RelayEnded: M._relay_ended,
        Aborted: M._abort_relay,
    },
    State.CLOSED: {
        RouteAnswered: M._answered_after_client_left,
        ConnectDone: M._connect_done,
        AttemptDurable: M._attempt_durable,
        (Lost, CLIENT): M._client_gone_after_close,
        (Eof, SERVER): M._given_up_backend_ends,
        (Lost, SERVER): M._given_up_backend_ends,
        Aborted: M._abort,
    },
}
_EVENTS = frozenset(Event.__args__)


def _other(side: Side) -> Side:
    return SERVER if side is CLIENT else CLIENT


def _trusted(host: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
