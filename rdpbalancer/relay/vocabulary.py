"""The session machine's vocabulary (relay/machine.py): what happens to a connection (events,
past tense), what the shell must do about it (commands, imperative), where the connection is in its
life (`State`), and the one exception that leaves the machine (`IllegalEvent`).

Plain frozen, slotted dataclasses and enums: the shell (relay/session.py), the readers of a session
(relay/context.SessionView, the admin API) and the tests speak these without loading the machine,
and this module loads nothing but the policy's model types and the session facts (relay/facts.py),
which the machine emits as commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from rdpbalancer.policy.model import Decision, Server
from rdpbalancer.relay.facts import Fact, Question


class State(Enum):
    """Where a session is in its life; each has its own transitions (relay/machine.py)."""

    HANDSHAKE = "handshake"
    ROUTING = "routing"
    RELAY = "relay"
    CLOSED = "closed"


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
    """The control plane's `Decided`: its first attempt is started (`attempted`: its AttemptDurable
    follows, as an `AttemptStarted`'s does), or it could not answer (`unavailable`). `at`:
    monotonic seconds, the start of the connect budget."""

    decision: Decision | None
    ambiguous: bool = False
    attempted: bool = False
    unavailable: str | None = None
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ConnectDone:
    """The connect of the current attempt finished: `error` None, connected; else why not. `at`:
    when (monotonic seconds, the clock of `RouteAnswered.at`)."""

    error: str | None = None
    at: float = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class AttemptDurable:
    """The control plane's `Durable`: the attempt's assignment is stored; `winner`: None, or where
    another node placed the user first; `unavailable`: it is not stored, and why; `at`: when (as
    `ConnectDone.at`)."""

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
class Connect:
    """Connect to `server` within `budget_s` (its `ConnectDone` follows, whatever happens)."""

    server: Server
    budget_s: float


@dataclass(frozen=True, slots=True)
class CancelConnect:
    pass


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
    """A line about this session; `count`: also counted under that connections result. `level`:
    a `logging` level number (INFO, WARNING below: the same values, without importing logging,
    which loads threading into the sans-IO core)."""

    level: int
    message: str
    count: str = ""


INFO = 20  # logging.INFO
WARNING = 30  # logging.WARNING

Event = (ClientConnected | Admitted | ClientData | Eof | Lost | DeadlinePassed | RouteAnswered | ConnectDone
         | AttemptDurable | RelayEnded | Aborted)
# the session facts (relay/facts.py) the machine emits are commands too: the shell hands them to the
# control plane as they are (`ask` the questions, `tell` the rest)
Command = (Admit | Refuse | Register | HandshakeDone | Reject | CountEmpty | Question | Connect | CancelConnect
           | Fact | PauseClient | StartRelay | WriteEof | Close | Finish | Log)


MAX_EVENT_TEXT = 200  # characters of an event's repr in IllegalEvent's message: a ClientData may hold 64 KiB


class IllegalEvent(Exception):
    """An event that has no transition in the state it arrived in (h11's LocalProtocolError for
    our own side): the shell and the machine disagree about the connection, a bug of ours, never
    the peer's. The machine's state is left as it was; the shell logs it, counts it and closes the
    session (relay/session.py)."""

    def __init__(self, state: State, event: Event) -> None:
        self.state, self.event = state, event
        text = repr(event)
        shown = text if len(text) <= MAX_EVENT_TEXT else text[:MAX_EVENT_TEXT] + "..."
        super().__init__(f"{type(event).__name__} is illegal in state {state.name}: {shown}")

