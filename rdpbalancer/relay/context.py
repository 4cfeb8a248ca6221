"""What every session needs from the running balancer, gathered in one object."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rdpbalancer import clock
from rdpbalancer.policy.limits import Admission
from rdpbalancer.policy.model import Decision, Server
from rdpbalancer.relay.control import Control
from rdpbalancer.relay.deadlines import Deadlines
from rdpbalancer.relay.splice import PipePool
from rdpbalancer.relay.vocabulary import State
from rdpbalancer.settings import RelaySettings
from rdpbalancer.tasks import TaskSet

RECENT_DECISIONS = 200  # routing outcomes kept for the dashboard


class SessionView(Protocol):
    """A connection as the registry, the admin API and the metrics see it: a Session of this
    process, or a worker's relaying session as the primary knows it (workers/primary.py)."""

    id: str
    listener: str
    started_wall: float
    worker: int  # 0: this process

    @property
    def user(self) -> str | None: ...

    @property
    def client_addr(self) -> tuple[str, int]: ...

    @property
    def state(self) -> State: ...

    @property
    def decision(self) -> Decision | None: ...

    @property
    def server(self) -> Server | None: ...

    @property
    def relaying(self) -> bool: ...

    @property
    def bytes_up(self) -> int: ...

    @property
    def bytes_down(self) -> int: ...

    def abort(self, reason: str) -> None: ...


def _ignore(_seconds: float) -> None:
    pass


@dataclass(slots=True)
class Stats:
    """Plain counters; the metrics module exports them."""

    connections: Counter[str] = field(default_factory=Counter)  # by outcome/reason
    malformed: Counter[str] = field(default_factory=Counter)  # by ProtocolError kind
    connect_failures: Counter[str] = field(default_factory=Counter)  # by server
    bytes_up: int = 0  # client -> server, finished sessions
    bytes_down: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by limit (policy.limits.Refusal), before any byte
    # connects to servers by the address the server saw: "client" (transparent mode), "balancer"
    backend_sources: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class RelayContext:
    control: Control  # routing and sticky state: this process's router, or the primary's (workers)
    settings: RelaySettings
    clock: Callable[[], float] = clock.now  # reads as the wall clock, steps like the monotonic one
    tasks: TaskSet = field(default_factory=TaskSet)
    stats: Stats = field(default_factory=Stats)
    sessions: dict[str, SessionView] = field(default_factory=dict)  # id -> every connection, for the API
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))
    observe_handshake: Callable[[float], None] = _ignore  # seconds from accept to a complete CR
    observe_connect: Callable[[float], None] = _ignore  # seconds to connect to a server
    splice: PipePool | None = None  # set: relay with os.splice (Linux); None: the Protocol relay
    deadlines: Deadlines = field(default_factory=Deadlines)  # the handshake deadlines, one timer for all
    admission: Admission = field(init=False)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    # the whole pid: ids stay unique across worker processes (no two live processes share a pid)
    _prefix: str = field(default_factory=lambda: f"{os.getpid():06x}")  # pid_max <= 2**22

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.limits)

    def configure(self, settings: RelaySettings) -> None:
        """New settings (a reload): sessions read them as they go; the limits apply at once."""
        self.settings = settings
        self.admission.reconfigure(settings.limits)

    def record_decision(self, session: SessionView, reason: str, server: str | None, detail: str = "") -> None:
        """Keep the latest routing outcomes for the dashboard and the API."""
        decision = session.decision
        self.decisions.append({
            "at": time.time(), "session": session.id, "client": session.client_addr[0],
            "user": session.user, "pool": decision.pool if decision else None, "server": server,
            "reason": reason, "route": decision.route if decision else None, "detail": detail[:200],
            "moved_from": decision.moved_from if decision else None,
        })

    def new_session_id(self) -> str:
        return f"{self._prefix}{next(self._ids):06x}"
