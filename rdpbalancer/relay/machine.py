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
take. All the attempts of one connection fit in the budget (see `SessionMachine._connect`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from rdpbalancer.policy.identity import printable, user_key
from rdpbalancer.policy.limits import Refusal, source_of
from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.policy.placement import AttemptOutcome, follow_winner, judge_attempt
from rdpbalancer.proto import ClientHandshake, ConnectionRequestReceived, ProtocolError
from rdpbalancer.proto.errors import EOF as EOF_KIND
from rdpbalancer.proto.proxy import parse_proxy_header
from rdpbalancer.relay.context import State
from rdpbalancer.settings import RelaySettings

# never give a connect attempt less than this: a next candidate is not tried once less is left
MIN_ATTEMPT_TIMEOUT_S = 0.25
# Client bytes after its Connection Request, held while a server is chosen and reached. The client
# is still read meanwhile so that its leaving is noticed at once (a paused transport sees no EOF or
# reset); a client normally waits for the Confirm, so beyond this it is paused until the relay.
MAX_EARLY_CLIENT_BYTES = 64 * 1024


class Side(Enum):
    CLIENT = "client"
    SERVER = "server"


NEITHER: frozenset[Side] = frozenset()
BOTH = frozenset({Side.CLIENT, Side.SERVER})


# -- events (what happened) ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientConnected:
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Admitted:
    """The answer to `Admit`: None, or the [limits] refusal and its explanation."""

    refusal: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ClientData:
    data: bytes


@dataclass(frozen=True, slots=True)
class Eof:
    side: Side


@dataclass(frozen=True, slots=True)
class Lost:
    """A leg's connection is gone: closed (error None) or reset/failed."""

    side: Side
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The handshake deadline (`ArmDeadline`)."""


@dataclass(frozen=True, slots=True)
class RouteAnswered:
    """The control plane decided; its first attempt is started (`durable` follows), or it could
    not answer (`unavailable`). `at`: monotonic seconds, the start of the connect budget."""

    decision: Decision | None
    ambiguous: bool = False
    attempted: bool = False
    unavailable: str | None = None
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ConnectDone:
    """The connect of the current attempt finished: "" connected, else why not; `at`: when
    (monotonic seconds, the clock of `RouteAnswered.at`)."""

    error: str = ""
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class AttemptDurable:
    """The attempt's assignment is durable: None, or where another node placed the user first;
    `unavailable`: the control plane could not tell; `at`: when (as `ConnectDone.at`)."""

    winner: Server | None = None
    unavailable: str | None = None
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class RelayEnded:
    """The splice pump is done (both directions, or a reset): the bytes it moved."""

    up: int
    down: int
    reason: str


@dataclass(frozen=True, slots=True)
class Aborted:
    """Cut it now (shutdown, an operator, on_down = shutdown-sessions)."""

    reason: str


# -- commands (what to do) ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Admit:
    """Ask [limits] whether `source` may connect (answer with `Admitted`)."""

    source: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Before any byte of its own: reset the client, count and log the refusal (rate-limited)."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Register:
    """A session now: into the registry, handshake deadline armed for `deadline_s`."""

    deadline_s: float


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """The Connection Request is complete: deadline off, out of [limits] max_handshakes (the
    shell does the same at a `Reject`, `CountEmpty` or `Finish`)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Close the client (FIN) with a "rejected" line; `count`: the connections counter;
    `malformed`: also counted as a malformed first packet of that kind."""

    count: str
    reason: str
    malformed: str | None = None


@dataclass(frozen=True, slots=True)
class CountEmpty:
    """Connect-then-close without a byte (a TCP health check): counted, not logged."""


@dataclass(frozen=True, slots=True)
class AskRoute:
    request: RouteRequest


@dataclass(frozen=True, slots=True)
class Attempt:
    """Start the attempt on the next candidate (assignment, count): its `AttemptDurable` follows."""

    decision: Decision
    server: Server


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect to `server` within `budget_s` (its `ConnectDone` follows, whatever happens)."""

    server: Server
    budget_s: float


@dataclass(frozen=True, slots=True)
class CancelConnect:
    pass


@dataclass(frozen=True, slots=True)
class AttemptConnected:
    server: Server


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """The server's fault: counted, told to passive health checks, the backend dropped."""

    server: Server
    error: str


@dataclass(frozen=True, slots=True)
class AttemptAbandoned:
    """Nobody's fault: only the count is undone, the backend dropped."""

    server: Server


@dataclass(frozen=True, slots=True)
class AllFailed:
    """Every candidate failed: forget an assignment the user never reached."""

    decision: Decision


@dataclass(frozen=True, slots=True)
class PauseClient:
    pass


@dataclass(frozen=True, slots=True)
class StartRelay:
    """Connected and durable: relay. `first`: the CR verbatim and what followed it; `resume`:
    the client was paused for its early bytes and may be read again."""

    decision: Decision
    server: Server
    first: bytes
    resume: bool


@dataclass(frozen=True, slots=True)
class WriteEof:
    """Half-close: pass an EOF on to `side`."""

    side: Side


@dataclass(frozen=True, slots=True)
class Close:
    """Close `side` (reset: pass a reset on, promptly; else flush, then FIN)."""

    side: Side
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """The session is over: leave the registry and the limits; a relayed one is accounted;
    `count`: also counted under that result (a client gone during the handshake)."""

    relayed: bool
    reason: str
    count: str = ""


@dataclass(frozen=True, slots=True)
class Log:
    """A line about this session; `count`: also counted under that connections result."""

    level: int
    message: str
    count: str = ""


Event = (ClientConnected | Admitted | ClientData | Eof | Lost | DeadlinePassed | RouteAnswered | ConnectDone
         | AttemptDurable | RelayEnded | Aborted)
Command = (Admit | Refuse | Register | HandshakeDone | Reject | CountEmpty | AskRoute | Attempt | Connect
           | CancelConnect | AttemptConnected | AttemptFailed | AttemptAbandoned | AllFailed | PauseClient
           | StartRelay | WriteEof | Close | Finish | Log)

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

    __slots__ = ("_attempt", "_client_left", "_closing", "_connected", "_cr", "_deadline", "_durable", "_early",
                 "_eof", "_finished", "_followed", "_gone", "_handshake", "_paused", "_proxy", "_registered",
                 "addr", "decision", "end_reason", "listener", "server", "settings", "state", "user")

    def __init__(self, settings: RelaySettings, listener: str) -> None:
        self.settings, self.listener = settings, listener
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
        self._connected: str | None = None  # the current connect's result, until both halves are in
        self._durable: AttemptDurable | None = None
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
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"not an event of the session machine: {type(event).__name__}")
        return handler(self, event)

    def _on_client_connected(self, event: ClientConnected) -> list[Command]:
        return self._connected_client(event.addr)

    def _on_admitted(self, event: Admitted) -> list[Command]:
        return self._admitted(event.refusal, event.detail)

    def _on_client_data(self, event: ClientData) -> list[Command]:
        return self._client_data(event.data)

    def _on_eof(self, event: Eof) -> list[Command]:
        return self._eof_from(event.side)

    def _on_lost(self, event: Lost) -> list[Command]:
        return self._lost(event.side, event.error)

    def _on_deadline(self, _event: DeadlinePassed) -> list[Command]:
        return self._expired()

    def _on_connect_done(self, event: ConnectDone) -> list[Command]:
        self._connected = event.error
        return self._judge(event.at)

    def _on_durable(self, event: AttemptDurable) -> list[Command]:
        self._durable = event
        return self._judge(event.at)

    def _on_relay_ended(self, event: RelayEnded) -> list[Command]:
        self.end_reason = self.end_reason or event.reason
        self._gone = BOTH
        return self._finish()

    def _on_aborted(self, event: Aborted) -> list[Command]:
        return self._aborted(event.reason)

    # -- admission and PROXY -----------------------------------------------------------------------------

    def _connected_client(self, addr: tuple[str, int]) -> list[Command]:
        self.addr = addr
        if self.listener in self.settings.proxy_listeners:
            if not _trusted(addr[0], self.settings.trusted_proxies):
                self.state = State.CLOSED
                return [Refuse("untrusted-proxy", f"{addr[0]} connected to PROXY protocol listener "
                                                  f"{self.listener} but is not in [balancer] trusted_proxies")]
            self._proxy = bytearray()  # admitted once the header names the real client
            self._registered = True
            return [Register(self.settings.handshake_timeout_s)]
        return [Admit(source_of(addr[0]))]

    def _admitted(self, refusal: str | None, detail: str) -> list[Command]:
        if refusal is not None:
            self.state = State.CLOSED
            return [Refuse(refusal, detail), *self._finish()] if self._registered else [Refuse(refusal, detail)]
        commands: list[Command] = []
        if not self._registered:
            self._registered = True
            commands.append(Register(self.settings.handshake_timeout_s))
        if self._early:  # after a PROXY header: the client's own first bytes
            rest, self._early = self._early, b""
            commands += self._feed(rest)
        return commands

    def _client_data(self, data: bytes) -> list[Command]:
        if self.state is State.ROUTING:
            self._early += data  # forwarded after the CR once relaying
            if len(self._early) > MAX_EARLY_CLIENT_BYTES and not self._paused:
                self._paused = True
                return [PauseClient()]
            return []
        if self.state is not State.HANDSHAKE:
            return []
        if self._proxy is not None:
            return self._feed_proxy(data)
        return self._feed(data)

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
            return []
        self._proxy = None
        if header.source is not None:  # None: LOCAL/UNKNOWN (the proxy's own check): the proxy it is
            self.addr = header.source
        self._early = bytes(buffer[header.length:])  # fed once admitted
        return [Admit(source_of(self.addr[0]))]

    # -- the handshake ---------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> list[Command]:
        handshake = self._handshake
        if handshake is None:
            return []  # the Connection Request is in: nothing more to parse
        try:
            handshake.receive_data(data)
            event = handshake.next_event()
        except ProtocolError as exc:
            return self._malformed(exc)
        if not isinstance(event, ConnectionRequestReceived):
            return []
        cr = event.request
        self.state = State.ROUTING  # the client is still read: its leaving is noticed at once
        self._cr = cr.raw + handshake.trailing_data
        self._handshake = None
        key = user_key(cr.cookie, strip_domain=self.settings.strip_domain) if cr.cookie is not None else None
        self.user = key
        request = RouteRequest(client_host=self.addr[0], user_key=key, msts_target=cr.msts_target,
                               collection=cr.collection, listener=self.listener)
        return [HandshakeDone(), AskRoute(request)]

    def _malformed(self, exc: ProtocolError) -> list[Command]:
        self.state = State.CLOSED
        if exc.kind == EOF_KIND:
            # connect-then-close without a byte: a TCP health check (keepalived, another load
            # balancer, a port scan). Counted, but not logged at info level: it is not an error.
            self.end_reason = "closed without sending"
            return [CountEmpty()]
        return self._reject(f"malformed: {exc.kind}: {exc}", "malformed", malformed=exc.kind)

    def _expired(self) -> list[Command]:
        if self.state is not State.HANDSHAKE:
            return []
        return self._reject("handshake-timeout", "handshake-timeout", malformed="handshake-timeout")

    def _reject(self, reason: str, count: str, *, malformed: str | None = None) -> list[Command]:
        self.end_reason = reason
        self.state = State.CLOSED
        commands: list[Command] = [Reject(count, reason, malformed)]
        if Side.CLIENT in self._gone:
            commands += self._finish()
        return commands

    # -- routing and attempts --------------------------------------------------------------------------

    def _routed(self, answer: RouteAnswered) -> list[Command]:
        if self.state is not State.ROUTING:  # the client left while the control plane decided
            if answer.decision is not None and answer.attempted and answer.decision.candidates:
                self.decision, self.server = answer.decision, answer.decision.candidates[0]
                self._client_left, self._connected = True, "client left before connect"
                return self._judge(answer.at)
            return []
        if answer.unavailable is not None or answer.decision is None:
            return self._reject(f"unavailable: {answer.unavailable}", "unavailable")
        decision = self.decision = answer.decision
        if decision.reason is Reason.LIMITED or decision.reason is Reason.PER_USER:
            self.state = State.CLOSED
            refusal = Refusal.NEW_USERS if decision.reason is Reason.LIMITED else Refusal.PER_USER
            return [Refuse(refusal, f"user {self.user_text()}: {decision.detail}"), *self._finish()]
        if not answer.attempted:
            return self._reject(f"{decision.reason}: {decision.detail}", str(decision.reason))
        commands: list[Command] = []
        if answer.ambiguous:
            commands.append(Log(logging.WARNING, f"user {self.user_text()} is a truncated name shared by users "
                                                 f"routed differently; {decision.route} applied", "ambiguous"))
        self._deadline = answer.at + self.settings.connect_timeout_s
        self._attempt = 0
        return commands + self._connect(answer.at, started=True)

    def _connect(self, now: float, *, started: bool) -> list[Command]:
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
        self._connected, self._durable = None, None
        budget = min(remaining, max(MIN_ATTEMPT_TIMEOUT_S, remaining / (len(candidates) - self._attempt)))
        commands: list[Command] = [] if started else [Attempt(self.decision, server)]
        return [*commands, Connect(server, budget)]

    def _judge(self, now: float) -> list[Command]:
        """Both halves of an attempt are in (the connect, the durable assignment; the later came
        at `now`): what next."""
        if self._connected is None or self._durable is None:
            return []
        server, durable = self.server, self._durable
        assert server is not None and self.decision is not None
        error = self._connected or (f"control plane unavailable: {durable.unavailable}"
                                    if durable.unavailable is not None else "")
        client_left = self._client_left or self.state is not State.ROUTING
        if durable.winner is not None and not client_left:
            follow = follow_winner(self.decision, durable.winner, self._followed)
            commands: list[Command] = [AttemptAbandoned(server)]
            if follow is None:
                return commands + self._all_failed()
            self._followed, self.decision, self._attempt = True, follow, 0
            return [*commands, Log(logging.INFO, f"user {self.user_text()} was placed on {durable.winner.name} by "
                                                 "another balancer first; following"),
                    *self._connect(now, started=False)]
        outcome = judge_attempt(error=error, client_left=client_left)
        if outcome is AttemptOutcome.ABANDONED:
            self.server = None
            return [AttemptAbandoned(server)]
        if outcome is AttemptOutcome.FAILED:
            self.server = None
            failed: list[Command] = [AttemptFailed(server, error)]
            if self._attempt + 1 < len(self.decision.candidates):
                self._attempt += 1
                return failed + self._connect(now, started=False)
            return failed + self._all_failed()
        self.state = State.RELAY
        first, self._early, self._cr = self._cr + self._early, b"", b""
        resume, self._paused = self._paused, False
        return [AttemptConnected(server), StartRelay(self.decision, server, first, resume)]

    def _all_failed(self, *, spent: bool = False) -> list[Command]:
        """Every candidate failed, or (`spent`) the budget is spent before candidate `_attempt`."""
        assert self.decision is not None
        decision = self.decision
        commands: list[Command] = [AllFailed(decision)]
        if self.state is State.ROUTING:
            names = [s.name for s in decision.candidates]
            if spent:
                self.server = None
                tried, untried = names[:self._attempt], names[self._attempt:]
                what = (f"{', '.join(tried)} unreachable, " if tried else "") + f"{', '.join(untried)} not tried"
                reason = (f"connect-failed: connect budget spent (connect_timeout "
                          f"{self.settings.connect_timeout_s:g}s): {what} ({decision.detail})")
            else:
                reason = f"connect-failed: {', '.join(names)} unreachable ({decision.detail})"
            commands += self._reject(reason, "connect-failed")
        return commands

    # -- half-close and teardown -----------------------------------------------------------------------

    def _eof_from(self, side: Side) -> list[Command]:
        """Outside the relay the leg is closed by the shell (its eof_received answers False)."""
        if self.state is not State.RELAY:
            if side is Side.CLIENT and self.state is State.HANDSHAKE:
                return self._feed(b"")  # EOF before a full CR: the parser reports it
            return []
        self._eof = self._eof | {side}
        other = Side.SERVER if side is Side.CLIENT else Side.CLIENT
        commands: list[Command] = [WriteEof(other)]
        if self._eof == BOTH:
            commands += self._close(Side.CLIENT, Side.SERVER)
        return commands

    def _close(self, *sides: Side, reset: bool = False) -> list[Command]:
        """Close each side not gone and not closing already (an abort's reset overrides a FIN)."""
        wanted = [side for side in sides if side not in self._gone and (reset or side not in self._closing)]
        self._closing = self._closing.union(wanted)
        return [Close(side, reset=reset) for side in wanted]

    def _lost(self, side: Side, error: str | None) -> list[Command]:
        if side in self._gone:
            return []
        if side is Side.SERVER and self.state is not State.RELAY:
            if self.state is State.ROUTING and self._connected == "":  # connected, not yet durable
                self._connected = "closed by server during connect"
            return []  # else the backend of a failed or abandoned attempt
        self._gone = self._gone | {side}
        if not self.end_reason:
            self.end_reason = f"{side.value} closed" if error is None else f"{side.value} error: {error}"
        if self.state is State.RELAY:
            other = Side.SERVER if side is Side.CLIENT else Side.CLIENT
            return self._close(other, reset=error is not None and other not in self._closing) + self._finish_if_gone()
        if self.state is State.HANDSHAKE:
            self.state = State.CLOSED
            return self._finish(count="client-gone")
        if self.state is State.ROUTING:
            self.state = State.CLOSED  # routing notices and gives up: the connect is cancelled
            self._client_left = True
            return [CancelConnect(), *self._finish()]
        return self._finish()  # closed by a Reject or a Refuse: it leaves the registry now

    def _finish_if_gone(self) -> list[Command]:
        if self._gone == BOTH:
            return self._finish()
        return []

    def _finish(self, count: str = "") -> list[Command]:
        if self._finished or not self._registered:
            return []
        self._finished = True
        relayed = self.state is State.RELAY
        self.state = State.CLOSED
        return [Finish(relayed, self.end_reason, count)]

    def _aborted(self, reason: str) -> list[Command]:
        self.end_reason = self.end_reason or reason
        sides = (Side.CLIENT, Side.SERVER) if self.state is State.RELAY else (Side.CLIENT,)
        return self._close(*sides, reset=True)


# one dictionary lookup per event (a chain of isinstance checks costs more on every connection)
_HANDLERS: dict[type, Callable[[SessionMachine, Any], list[Command]]] = {
    ClientConnected: SessionMachine._on_client_connected, Admitted: SessionMachine._on_admitted,
    ClientData: SessionMachine._on_client_data, Eof: SessionMachine._on_eof, Lost: SessionMachine._on_lost,
    DeadlinePassed: SessionMachine._on_deadline, RouteAnswered: SessionMachine._routed,
    ConnectDone: SessionMachine._on_connect_done, AttemptDurable: SessionMachine._on_durable,
    RelayEnded: SessionMachine._on_relay_ended, Aborted: SessionMachine._on_aborted,
}


def _trusted(host: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
