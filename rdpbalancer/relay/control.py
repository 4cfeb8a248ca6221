"""The session's one door to routing state: `Control`.

A session asks the control plane where to go and tells it what happened (attempt, failure,
relaying, end); it never touches the router or the store itself. Two implementations:

- `LocalControl`: the router and store of this process (one process, or the primary worker).
- `rdpbalancer.workers.worker.RemoteControl`: a secondary worker's messages to the primary,
  which owns the one router, sticky table and store (see `rdpbalancer.workers`).

So routing, health and the sticky table exist once however many processes relay bytes: two
workers cannot assign one new user to two servers, and leastconn sees every worker's sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rdpbalancer import tasks
from rdpbalancer.policy.engine import Router, counted_user
from rdpbalancer.policy.model import Decision, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyEntry
from rdpbalancer.store.port import StickyStorePort


class BackendEvents(Protocol):
    """What live traffic tells the health monitor (passive checks)."""

    def connect_failed(self, server: str, error: str) -> None: ...

    def connect_succeeded(self, server: str) -> None: ...


class IgnoreBackendEvents:
    def connect_failed(self, server: str, error: str) -> None:
        pass

    def connect_succeeded(self, server: str) -> None:
        pass


class ControlUnavailable(Exception):
    """The control plane cannot answer (a worker whose primary is gone)."""


class Control(Protocol):
    """Every method takes the session's id (unique per process) first."""

    def route(self, sid: str, request: RouteRequest) -> asyncio.Future[Routed]:
        """Decide where `request` goes and, with no pause in between, start the attempt on
        the first candidate (as `attempt` does), so two connections of one new user agree.
        The future is often done already (this process's table decides at once)."""
        ...

    def attempt(self, sid: str, decision: Decision, server: Server) -> asyncio.Future[Server | None]:
        """A connect to `server` starts: the user is assigned to it and the server's count
        goes up. The awaitable resolves once the assignment is durable: to None, or to the
        server another balancer sharing the table placed the user on first (policy.placement)."""
        ...

    def connected(self, sid: str, server: Server) -> None: ...

    def attempt_failed(self, sid: str, server: Server, error: str) -> None:
        """The connect started by `attempt` failed: undo its count, tell health checking."""
        ...

    def all_failed(self, sid: str, decision: Decision) -> None:
        """Every candidate failed: forget an assignment the user never reached."""
        ...

    def abandon(self, sid: str, server: Server) -> None:
        """The attempt on `server` is given up for no fault of the server: undo its count."""
        ...

    def relaying(self, sid: str, session: SessionInfo) -> None: ...

    def finished(self, sid: str, decision: Decision, server: Server, bytes_up: int, bytes_down: int) -> None:
        """A relayed session ended (its count goes down, its user's entry is refreshed)."""
        ...


def durable_outcome(durable: asyncio.Future[Server | None]) -> tuple[Server | None, str | None]:
    """What a done `attempt` future says, the same for this process's sessions and a worker's:
    (the server another balancer placed the user on, or None; why the control plane could not
    tell, or None). A write that failed is not durable: it is "unavailable", never a success."""
    if durable.cancelled():
        return None, "cancelled"
    exc = durable.exception()
    if exc is not None:
        return None, str(exc) or type(exc).__name__
    return durable.result(), None


@dataclass(frozen=True, slots=True)
class Routed:
    decision: Decision
    ambiguous: bool  # a truncated cookie whose candidate users would route differently
    first_attempt: asyncio.Future[Server | None] | None  # the attempt on decision.candidates[0], if any


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the control plane keeps about a relaying session (for the API and dashboard)."""

    decision: Decision
    server: Server
    user: str | None
    client_addr: tuple[str, int]
    listener: str
    started_wall: float


class SessionWatcher(Protocol):
    """A handoff's successor process, as the old one's sessions tell it of their starts and ends."""

    def session_opened(self, server: str, key: str | None, at: float) -> None: ...

    def session_closed(self, server: str, key: str | None, at: float) -> None: ...


class LocalControl:
    """Control backed by this process's router and store (no `await` between decide and assign)."""

    def __init__(self, router: Router, store: StickyStorePort, events: BackendEvents,
                 clock: Callable[[], float]) -> None:
        self.router = router
        self.store = store
        self.events = events
        self.clock = clock
        # a handoff's successor: told of each session start and end here, and the table's only
        # writer (this process no longer persists the ends); None while this process serves
        self.successor: SessionWatcher | None = None
        self._users: dict[str, str] = {}  # sid -> the user its attempt counts for (per_user_connections)

    def route(self, sid: str, request: RouteRequest) -> asyncio.Future[Routed]:
        if self.store.shared and request.user_key is not None:  # other balancers write it too
            return tasks.start(self._route_shared(sid, request, request.user_key))
        routed: asyncio.Future[Routed] = asyncio.get_running_loop().create_future()
        routed.set_result(self.decide(sid, request))  # no store to ask: decided at once
        return routed

    async def _route_shared(self, sid: str, request: RouteRequest, key: str) -> Routed:
        answered, entry = await self.store.lookup(key)
        if answered:
            self.adopt(key, entry)
        return self.decide(sid, request)

    def adopt(self, key: str, entry: StickyEntry | None) -> None:
        """The shared store's word about `key` replaces ours (not written back)."""
        table = self.router.table
        if entry is None:
            mine = table.get(key, self.clock())
            if mine is not None and mine.active == 0:
                table.delete(key)  # expired or deleted there
            return
        table.merge(entry, authoritative=True)

    def decide(self, sid: str, request: RouteRequest) -> Routed:
        decision = self.router.decide(request, self.clock())  # the new-user budget included
        first = self.attempt(sid, decision, decision.candidates[0]) if decision.candidates else None
        return Routed(decision, decision.ambiguous, first)

    def attempt(self, sid: str, decision: Decision, server: Server) -> asyncio.Future[Server | None]:
        change = self.router.assign(decision, server, self.clock())
        self.router.opened(server)
        user = counted_user(decision)
        if user is not None:
            self._users[sid] = user
            self.router.user_opened(user)
        if not (change.put or change.delete or change.dropped):  # a returning user: nothing to write
            durable: asyncio.Future[Server | None] = asyncio.get_running_loop().create_future()
            durable.set_result(None)
            return durable
        writing = self.store.apply(change)
        if isinstance(writing, asyncio.Future) and not self.store.shared:  # the file: no winner elsewhere
            return _resolved_none(writing)
        return tasks.start(self._persist(writing, decision, server))

    async def _persist(self, writing: Awaitable[Sequence[StickyEntry]], decision: Decision,
                       server: Server) -> Server | None:
        """Durable; None, or the server another balancer sharing the table placed the user on."""
        winners = await writing
        placed_elsewhere = None
        for entry in winners:
            self.router.table.merge(entry, authoritative=True)
            if entry.key == decision.sticky_key and entry.server != server.name:
                placed_elsewhere = self.router.policy.servers().get(entry.server)
        return placed_elsewhere

    def connected(self, sid: str, server: Server) -> None:
        self.events.connect_succeeded(server.name)

    def _attempt_over(self, sid: str, server: Server) -> None:
        """What `attempt` counted is undone (the connect failed or was given up, or the session ended)."""
        self.router.closed(server)
        user = self._users.pop(sid, None)
        if user is not None:
            self.router.user_closed(user)

    def attempt_failed(self, sid: str, server: Server, error: str) -> None:
        self._attempt_over(sid, server)
        self.events.connect_failed(server.name, error)

    def abandon(self, sid: str, server: Server) -> None:
        """An attempt given up for no fault of the server (its worker died, or another
        balancer placed the user elsewhere): only its count is undone."""
        self._attempt_over(sid, server)

    def all_failed(self, sid: str, decision: Decision) -> None:
        self.store.apply_later(self.router.unassign(decision, self.clock()))

    def relaying(self, sid: str, session: SessionInfo) -> None:
        key = session.decision.sticky_key
        if key is not None:
            self.router.table.session_opened(key, self.clock())
            if self.store.shared and self.successor is None:  # other nodes see a recent last_used: a logon under way
                entry = self.router.table.get(key, self.clock())
                if entry is not None:
                    self.store.refresh_later(self.router.table.refreshed(entry))
        if self.successor is not None:
            self.successor.session_opened(session.server.name, key, self.clock())

    def finished(self, sid: str, decision: Decision, server: Server, bytes_up: int, bytes_down: int) -> None:
        if self.successor is not None:
            self.successor.session_closed(server.name, decision.sticky_key, self.clock())
        self._attempt_over(sid, server)
        if decision.sticky_key is not None:
            entry = self.router.table.session_closed(decision.sticky_key, self.clock())
            if entry is not None and self.successor is None:
                self.store.refresh_later(self.router.table.refreshed(entry))


def _resolved_none(writing: asyncio.Future[Any]) -> asyncio.Future[Server | None]:
    """A future that resolves to None when `writing` does (or fails as it does)."""
    durable: asyncio.Future[Server | None] = asyncio.get_running_loop().create_future()

    def done(writing: asyncio.Future[Any]) -> None:
        if durable.done():
            return
        if writing.cancelled():
            durable.cancel()
        elif (exc := writing.exception()) is not None:
            durable.set_exception(exc)
        else:
            durable.set_result(None)

    writing.add_done_callback(done)
    return durable
