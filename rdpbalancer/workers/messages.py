"""What crosses the channel between the primary and a worker (rdpbalancer/ipc.py): one frozen
dataclass per message, dispatched with `match` in one place on each side.

A session's questions, facts and their answers are not here: they are the session facts of
relay/facts.py, sent as they are (the same types a session in the primary hands to its
`LocalControl`). This module holds what only the processes say to each other: setup, stop, handoff
quiescing, an operator's abort, the periodic report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rdpbalancer.relay.context import Stats
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
class Report:
    """Every second: counters, live byte counts, connections before their CR, recent decisions."""

    stats: Stats
    live: dict[str, tuple[int, int]]
    handshaking: int
    decisions: list[dict[str, Any]]
