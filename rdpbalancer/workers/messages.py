"""What crosses the channel between the primary and a worker (rdpbalancer/ipc.py): one frozen
dataclass per message, dispatched with `match` in one place on each side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rdpbalancer.policy.model import Decision, RouteRequest, Server
from rdpbalancer.relay.context import Stats
from rdpbalancer.relay.control import SessionInfo
from rdpbalancer.settings import RelaySettings


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker needs from the primary: sent at start and after every reload."""

    settings: RelaySettings
    # (name as configured, host, port as bound): port 0 is the one the primary got
    listen: tuple[tuple[str, str, int], ...]
    log_level: str
    log_format: str


# -- primary -> worker -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Setup:
    index: int
    setup: WorkerSetup


@dataclass(frozen=True, slots=True)
class Decided:
    """The answer to `Route`; the first attempt is started (its `Durable` follows)."""

    sid: str
    decision: Decision
    ambiguous: bool


@dataclass(frozen=True, slots=True)
class Durable:
    """The attempt's assignment is durable; `reassigned`: another node placed the user there;
    `unavailable`: it is not, and why (relay/control.py `durable_outcome`, as for the primary's
    own sessions)."""

    sid: str
    reassigned: Server | None = None
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class Abort:
    sid: str
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Quiesce:
    """A handoff: accept what is queued, close the listeners, exit once idle."""


# -- worker -> primary -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ready:
    """A `Setup` is applied (listening on its addresses)."""

    pid: int


@dataclass(frozen=True, slots=True)
class Quiet:
    """The listeners are closed after a `Quiesce`."""

    pid: int


@dataclass(frozen=True, slots=True)
class Route:
    sid: str
    request: RouteRequest


@dataclass(frozen=True, slots=True)
class Attempt:
    sid: str
    decision: Decision
    server: Server


@dataclass(frozen=True, slots=True)
class Failed:
    sid: str
    server: Server
    error: str


@dataclass(frozen=True, slots=True)
class AllFailed:
    sid: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Abandon:
    sid: str
    server: Server


@dataclass(frozen=True, slots=True)
class Relaying:
    sid: str
    info: SessionInfo


@dataclass(frozen=True, slots=True)
class Finished:
    sid: str
    decision: Decision
    server: Server
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True, slots=True)
class Report:
    """Every second: counters, live byte counts, connections before their CR, recent decisions."""

    stats: Stats
    live: dict[str, tuple[int, int]]
    handshaking: int
    decisions: list[dict[str, Any]]
