"""The session's one door to routing state: `Control`, which is asked questions and told facts.

A session asks the control plane where to go and tells it what happened (attempt, failure,
relaying, end) in the vocabulary of relay/facts.py; it never touches the router or the store
itself. Two implementations:

- `LocalControl`: the router and store of this process (one process, or the primary worker),
  which handles every fact with one `match`.
- `rdpbalancer.workers.worker.RemoteControl`: a secondary worker sends the same facts to the
  primary unchanged, which hands them to its `LocalControl` and sends the answers back unchanged.

So routing, health and the sticky table exist once however many processes relay bytes: two
workers cannot assign one new user to two servers, and leastconn sees every worker's sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from rdpbalancer import tasks
from rdpbalancer.policy.engine import Router, counted_user
from rdpbalancer.policy.model import Decision, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyEntry
from rdpbalancer.relay.facts import (
    Abandoned,
    AllFailed,
    Answer,
    AttemptFailed,
    AttemptStarted,
    Connected,
    Decided,
    Durable,
    Fact,
    Finished,
    Question,
    Relaying,
    RouteAsked,
)
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


Reply = Callable[[Answer], None]


class Control(Protocol):
    """The session's door to the control plane: it asks questions and tells facts
    (relay/facts.py, each keyed by the session's id)."""

    def ask(self, question: Question, reply: Reply) -> None:
        """`RouteAsked` is answered by `Decided` (within the call when this process decides
        without waiting), then, when its first attempt was started, by that attempt's
        `Durable`; `AttemptStarted` by its `Durable`, never within the call."""
        ...

    def tell(self, fact: Fact) -> None: ...


class FactWatcher(Protocol):
    """A handoff's successor process (rdpbalancer/handoff/old.py), which sees every fact this
    process is told, with the time it was told, once it counts this process's sessions."""

    def seen(self, fact: Fact, at: float) -> None: ...


class LocalControl:
    """Control backed by this process's router and store (no `await` between decide and assign)."""

    def __init__(self, router: Router, store: StickyStorePort, events: BackendEvents,
                 clock: Callable[[], float]) -> None:
        self.router = router
        self.store = store
        self.events = events
        self.clock = clock
        # a handoff's successor: sees every fact told here, and is the table's only writer (this
        # process no longer persists the ends); None while this process serves
        self.successor: FactWatcher | None = None
        self._users: dict[str, str] = {}  # sid -> the user its attempt counts for (per_user_connections)

    # -- questions -----------------------------------------------------------------------------

    def ask(self, question: Question, reply: Reply) -> None:
        match question:
            case RouteAsked(sid, request):
                routing = self._route(sid, request)
                if routing.done():
                    self._decided(sid, routing, reply)
                else:
                    routing.add_done_callback(lambda done: self._decided(sid, done, reply))
            case AttemptStarted(sid, decision, server):
                self._attempt(sid, decision, server).add_done_callback(lambda done: reply(durable(sid, done)))

    def _decided(self, sid: str, routing: asyncio.Future[tuple[Decision, asyncio.Future[Server | None] | None]],
                 reply: Reply) -> None:
        if routing.cancelled() or routing.exception() is not None:
            exc = None if routing.cancelled() else routing.exception()
            reply(Decided(sid, None, unavailable=(str(exc) or type(exc).__name__) if exc is not None else "cancelled"))
            return
        decision, first = routing.result()
        reply(Decided(sid, decision, decision.ambiguous, attempted=first is not None))
        if first is None:
            return
        if first.done():  # no write to wait for (a returning user): handed on at once, after Decided
            reply(durable(sid, first))
        else:
            first.add_done_callback(lambda done: reply(durable(sid, done)))

    def _route(self, sid: str, request: RouteRequest
               ) -> asyncio.Future[tuple[Decision, asyncio.Future[Server | None] | None]]:
        """The decision and its first attempt's durable future (None without candidates); done
        at once unless the shared store is asked first."""
        if self.store.shared and request.user_key is not None:  # other balancers write it too
            return tasks.start(self._route_shared(sid, request, request.user_key))
        routed: asyncio.Future[tuple[Decision, asyncio.Future[Server | None] | None]] = \
            asyncio.get_running_loop().create_future()
        routed.set_result(self.decide(sid, request))  # no store to ask: decided at once
        return routed

    async def _route_shared(self, sid: str, request: RouteRequest, key: str
                            ) -> tuple[Decision, asyncio.Future[Server | None] | None]:
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

    def decide(self, sid: str, request: RouteRequest) -> tuple[Decision, asyncio.Future[Server | None] | None]:
        """Decide and start the attempt on the first candidate, with no pause in between."""
        decision = self.router.decide(request, self.clock())  # the new-user budget included
        first = self._attempt(sid, decision, decision.candidates[0]) if decision.candidates else None
        return decision, first

    def _attempt(self, sid: str, decision: Decision, server: Server) -> asyncio.Future[Server | None]:
        """The user is assigned to `server`, its count goes up; the future resolves once the
        assignment is durable: to None, or to the server another balancer sharing the table placed
        the user on first (policy.placement)."""
        change = self.router.assign(decision, server, self.clock())
        self.router.opened(server)
        user = counted_user(decision)
        if user is not None:
            self._users[sid] = user
            self.router.user_opened(user)
        if not (change.put or change.delete or change.dropped):  # a returning user: nothing to write
            stored: asyncio.Future[Server | None] = asyncio.get_running_loop().create_future()
            stored.set_result(None)
            return stored
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

    # -- facts ---------------------------------------------------------------------------------

    def tell(self, fact: Fact) -> None:
        match fact:
            case Connected(_, server):
                self.events.connect_succeeded(server.name)
            case AttemptFailed(sid, server, error):
                self._attempt_over(sid, server)
                self.events.connect_failed(server.name, error)
            case Abandoned(sid, server):  # no fault of the server: only its count is undone
                self._attempt_over(sid, server)
            case AllFailed(_, decision):
                self.store.apply_later(self.router.unassign(decision, self.clock()))
            case Relaying(_, info):
                self._relaying(info.decision)
            case Finished(sid, decision, server):
                self._finished(sid, decision, server)
        if self.successor is not None:
            self.successor.seen(fact, self.clock())

    def _attempt_over(self, sid: str, server: Server) -> None:
        """What an attempt counted is undone (the connect failed or was given up, or the session ended)."""
        self.router.closed(server)
        user = self._users.pop(sid, None)
        if user is not None:
            self.router.user_closed(user)

    def _relaying(self, decision: Decision) -> None:
        key = decision.sticky_key
        if key is not None:
            self.router.table.session_opened(key, self.clock())
            if self.store.shared and self.successor is None:  # other nodes see a recent last_used: a logon under way
                entry = self.router.table.get(key, self.clock())
                if entry is not None:
                    self.store.refresh_later(self.router.table.refreshed(entry))

    def _finished(self, sid: str, decision: Decision, server: Server) -> None:
        self._attempt_over(sid, server)
        if decision.sticky_key is not None:
            entry = self.router.table.session_closed(decision.sticky_key, self.clock())
            if entry is not None and self.successor is None:
                self.store.refresh_later(self.router.table.refreshed(entry))


def durable(sid: str, stored: asyncio.Future[Server | None]) -> Durable:
    """What a done attempt future says, the same for this process's sessions and a worker's: the
    server another balancer placed the user on, or None; or why it is not stored. A write that
    failed is not durable: it is "unavailable", never a success."""
    if stored.cancelled():
        return Durable(sid, unavailable="cancelled")
    exc = stored.exception()
    if exc is not None:
        return Durable(sid, unavailable=str(exc) or type(exc).__name__)
    return Durable(sid, stored.result())


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
