"""What every session needs from the running balancer, gathered in one object."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.ports import StickyStore
from rdpbalancer.relay.tasks import TaskSet


@dataclass(frozen=True, slots=True)
class RelaySettings:
    handshake_timeout_s: float = 5.0  # time for the client to send its Connection Request
    connect_timeout_s: float = 4.0  # overall budget to reach a backend, all attempts included
    strip_domain: bool = True


@dataclass(slots=True)
class Stats:
    """Plain counters; the metrics module exports them."""

    connections: Counter[str] = field(default_factory=Counter)  # by outcome/reason
    malformed: Counter[str] = field(default_factory=Counter)  # by ProtocolError kind
    connect_failures: Counter[str] = field(default_factory=Counter)  # by server
    bytes_up: int = 0  # client -> server, finished sessions
    bytes_down: int = 0


class BackendEvents(Protocol):
    """What live traffic tells the health monitor (passive checks)."""

    def connect_failed(self, server: str, error: str) -> None: ...

    def connect_succeeded(self, server: str) -> None: ...


class IgnoreBackendEvents:
    def connect_failed(self, server: str, error: str) -> None:
        pass

    def connect_succeeded(self, server: str) -> None:
        pass


@dataclass(slots=True)
class RelayContext:
    router: Router
    store: StickyStore
    settings: RelaySettings
    clock: Callable[[], float] = time.time  # wall clock: sticky times outlive the process
    tasks: TaskSet = field(default_factory=TaskSet)
    stats: Stats = field(default_factory=Stats)
    sessions: dict[str, Any] = field(default_factory=dict)  # id -> Session, for the admin API
    backend_events: BackendEvents = field(default_factory=IgnoreBackendEvents)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _prefix: str = field(default_factory=lambda: f"{os.getpid() & 0xFFFF:04x}")

    def new_session_id(self) -> str:
        return f"{self._prefix}{next(self._ids):06x}"
