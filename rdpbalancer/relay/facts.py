"""Session facts: what a session tells the control plane, and the control plane's answers.

One vocabulary from the session machine to the router (`relay/control.py`): the machine emits
these (relay/machine.py), the shell hands them on as they are (relay/session.py), `LocalControl`
handles each with one `match`, and a worker sends them to the primary unchanged over its channel
(rdpbalancer/workers), where the primary hands them to the same `LocalControl`. A new fact is a
class here and a case there: the local and the worker paths cannot drift, they are the same types.

Frozen, slotted, keyed by the session's id (unique in its process; a worker's ids carry its index,
relay/context.py) and picklable. This module loads nothing but the policy's model types.

- Questions (`ask`): `RouteAsked`, answered by `Decided`, then, when the control plane started
  the first attempt with its decision, by that attempt's `Durable`; `AttemptStarted`, answered by
  its `Durable`.
- Facts (`tell`), no answer: `Connected`, `AttemptFailed`, `Abandoned`, `AllFailed`, `Relaying`,
  `Finished`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdpbalancer.policy.model import Decision, RouteRequest, Server

# -- questions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteAsked:
    """Where does this connection go? The control plane decides and, with no pause in between,
    starts the attempt on the first candidate (as `AttemptStarted` does), so two connections of
    one new user agree. Answered by `Decided`, then by the first attempt's `Durable`."""

    sid: str
    request: RouteRequest


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """A connect to `server` starts: the user is assigned to it and the server's count goes up.
    Answered by `Durable` once the assignment is stored."""

    sid: str
    decision: Decision
    server: Server


# -- facts ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The attempt's connect succeeded (passive health checks hear of it)."""

    sid: str
    server: Server


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """The server's fault: its count is undone and passive health checks hear of it."""

    sid: str
    server: Server
    error: str


@dataclass(frozen=True, slots=True)
class Abandoned:
    """An attempt given up for no fault of the server (the client left, another balancer placed
    the user elsewhere, a worker died): only its count is undone."""

    sid: str
    server: Server


@dataclass(frozen=True, slots=True)
class AllFailed:
    """Every candidate failed: an assignment the user never reached is forgotten."""

    sid: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the control plane keeps about a relaying session (for the API and dashboard)."""

    decision: Decision
    server: Server
    user: str | None
    client_addr: tuple[str, int]
    listener: str
    started_wall: float


@dataclass(frozen=True, slots=True)
class Relaying:
    """Connected and durable: the session relays from now on (its user's entry is in use)."""

    sid: str
    info: SessionInfo


@dataclass(frozen=True, slots=True)
class Finished:
    """A relayed session ended: its count goes down, its user's entry is refreshed."""

    sid: str
    decision: Decision
    server: Server
    bytes_up: int
    bytes_down: int


# -- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decided:
    """The answer to `RouteAsked`: the decision, and whether its first attempt was started
    (`attempted`: its `Durable` follows); or why the control plane could not decide
    (`unavailable`, and no decision)."""

    sid: str
    decision: Decision | None
    ambiguous: bool = False  # a truncated cookie whose candidate users would route differently
    attempted: bool = False
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class Durable:
    """An attempt's assignment is stored: `winner` None, or the server another balancer sharing
    the table placed the user on first (policy/placement.py); `unavailable`: it is not stored,
    and why (a failed write is never a success)."""

    sid: str
    winner: Server | None = None
    unavailable: str | None = None


Question = RouteAsked | AttemptStarted
Fact = Connected | AttemptFailed | Abandoned | AllFailed | Relaying | Finished
Answer = Decided | Durable
