"""The new process's side of a handoff: inherited sockets, the old process's state and journal,
and the account of what the old process still holds."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Collection
from typing import Protocol

from rdpbalancer import clock
from rdpbalancer.config.compile import Snapshot
from rdpbalancer.handoff.messages import (
    Address,
    Changed,
    Closed,
    HandoffError,
    Listeners,
    Loaded,
    Opened,
    RuntimeState,
    Serving,
    Yours,
)
from rdpbalancer.ipc import Channel, Message
from rdpbalancer.operations import Operations
from rdpbalancer.policy.engine import Router, limited_key
from rdpbalancer.policy.model import Server
from rdpbalancer.policy.ports import StickyStore
from rdpbalancer.policy.sticky import Change
from rdpbalancer.relay.listener import ListenerSet

log = logging.getLogger("rdpbalancer.handoff")

TAKE_TIMEOUT_S = 30.0  # from "loaded" to accepting


class Takeover:
    """The new process's side: inherited sockets, then the old process's state."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.channel: Channel | None = None
        self.listeners: dict[int, Address] = {}  # inherited fd -> configured address
        self._got_listeners = asyncio.Event()
        self._state: asyncio.Future[RuntimeState] | None = None
        self._predecessor: Predecessor | None = None  # set by `follow`
        self._early: list[Opened | Closed | Changed] = []  # reports that came before that
        self._lost = False

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._state = loop.create_future()
        channel = self.channel = Channel(self._on_message, self._on_lost)
        await loop.connect_accepted_socket(lambda: channel, socket.socket(fileno=self.fd))
        async with asyncio.timeout(TAKE_TIMEOUT_S):
            await self._got_listeners.wait()

    def sockets(self) -> dict[Address, socket.socket]:
        return {address: socket.socket(fileno=fd) for fd, address in self.listeners.items()}

    async def loaded(self) -> RuntimeState:
        """Tell the old process we are ready; its state once it stopped accepting."""
        assert self.channel is not None and self._state is not None
        self.channel.send(Loaded())
        async with asyncio.timeout(TAKE_TIMEOUT_S):
            return await self._state

    def follow(self, predecessor: Predecessor) -> None:
        """From now on the old process's reports go to `predecessor`, those that came before
        first: sessions that start relaying ("opened") or end ("closed"), and every change of
        the table it makes ("changed"). When the old process is gone, `predecessor.gone()`."""
        self._predecessor = predecessor
        early, self._early = self._early, []
        for message in early:
            predecessor.on_message(message)
        if self._lost:
            predecessor.gone()

    def serving(self) -> None:
        """Tell the old process we accept now: it no longer needs its spare sockets."""
        if self.channel is not None:
            self.channel.send(Serving())

    def _on_message(self, message: Message) -> None:
        match message:
            case Listeners(fds=fds):
                self.listeners = fds
                self._got_listeners.set()
            case Yours(state=state):
                if self._state is not None and not self._state.done():
                    self._state.set_result(state)
            case Opened() | Closed() | Changed():
                if self._predecessor is None:
                    self._early.append(message)  # while the new process still loads the table
                else:
                    self._predecessor.on_message(message)
            case _:
                log.error("handoff: unknown message %s from the old process; ignored", type(message).__name__)

    def _on_lost(self, _exc: Exception | None) -> None:
        self._lost = True
        if self._state is not None and not self._state.done():
            self._state.set_exception(HandoffError("the old process went away during the handoff"))
        self._got_listeners.set()
        if self._predecessor is not None:
            self._predecessor.gone()


class Predecessor:
    """The new process's account of what the old one still holds: its sessions load servers and
    keep users active until they end, and its table changes are adopted as they come. When the
    old process is gone (it exited, or died: kill -9, OOM), whatever it still held is released,
    as when a worker dies."""

    def __init__(self, router: Router, store: StickyStore, clock: Callable[[], float]) -> None:
        self.router, self.table, self.store, self.clock = router, router.table, store, clock
        self.connections: Counter[str] = Counter()  # server -> sessions still in the old process
        self.active: Counter[str] = Counter()  # sticky key -> its sessions there

    def adopt(self, state: RuntimeState, servers: Collection[str]) -> None:
        now = self.clock()
        for name, count in state.connections.items():
            if name in servers:
                self.router.connections[name] += count
                self.connections[name] += count
        for key, count in state.active_users.items():
            for _ in range(count):
                self.table.session_opened(key, now)
                self._user(key, +1)
            self.active[key] += count

    def on_message(self, message: Opened | Closed | Changed) -> None:
        match message:
            case Opened(server, key, at):
                self._opened(server, key, at)
            case Closed(server, key, at):
                self._closed(server, key, at)
            case Changed(change):
                self._changed(change)

    def _opened(self, server: str, key: str | None, now: float) -> None:
        self.router.connections[server] += 1
        self.connections[server] += 1
        if key is not None:
            self.table.session_opened(key, now)
            self.active[key] += 1
            self._user(key, +1)

    def _closed(self, server: str, key: str | None, now: float) -> None:
        if self.connections[server] <= 0:
            return  # not one we counted (the old process's report crossed a reload)
        self.connections[server] -= 1
        self.router.closed(Server(server, "", 0))
        if key is not None and self.active[key] > 0:
            self.active[key] -= 1
            self._user(key, -1)
            entry = self.table.session_closed(key, now)
            if entry is not None:
                self.store.refresh_later(self.table.refreshed(entry))

    def _user(self, key: str, step: int) -> None:
        """The old process's sessions count for their users' [limits] per_user_connections."""
        user = limited_key(key)
        if user is None:
            return
        if step > 0:
            self.router.user_opened(user)
        else:
            self.router.user_closed(user)

    def _changed(self, change: Change) -> None:
        """The old process wrote it to the same file already: adopted, not written again."""
        for entry in change.put:
            self.table.merge(entry, authoritative=True)
        for key in (*change.delete, *change.dropped):
            mine = self.table.get(key, self.clock())
            if mine is not None and mine.active == 0:
                self.table.delete(key)

    def gone(self) -> None:
        held = sum(self.connections.values())
        if held:
            log.warning("handoff: the old process is gone with %d session(s) still counted: released", held)
        now = self.clock()
        for server, count in list(self.connections.items()):
            for _ in range(count):
                self._closed(server, None, now)
        for key, count in list(self.active.items()):
            for _ in range(count):
                self._user(key, -1)
                entry = self.table.session_closed(key, now)
                if entry is not None:
                    self.store.refresh_later(self.table.refreshed(entry))
        self.active.clear()


class NewHost(Protocol):
    """The starting balancer as its takeover sees it."""

    @property
    def listeners(self) -> ListenerSet: ...

    @property
    def ops(self) -> Operations: ...

    @property
    def router(self) -> Router: ...

    @property
    def store(self) -> StickyStore: ...

    @property
    def snapshot(self) -> Snapshot: ...

    def clock(self) -> float: ...


async def take_over(takeover: Takeover, host: NewHost) -> None:
    """Wrap the inherited sockets (not accepting yet), let the old process stop, take its state
    and its journal; the caller starts serving once its admin API and workers are up."""
    snapshot = host.snapshot
    inherited = takeover.sockets()
    try:
        await host.listeners.open(snapshot.listen, reuse_port=snapshot.workers > 1, inherited=inherited,
                                  serving=False)
    finally:
        for address, sock in inherited.items():
            if address not in snapshot.listen:
                sock.close()  # the old process listened there; the new configuration does not
    state = await takeover.loaded()  # the old process stopped accepting and flushed its writes
    if state.clock_offset is not None:  # one time scale for the conditions and reports it hands over
        clock.PROCESS_CLOCK.adopt(state.clock_offset)
    host.ops.adopt(state.admin_overrides, state.weight_overrides)
    servers = snapshot.policy.servers()
    for name, condition in state.conditions.items():
        if name in servers:
            host.router.conditions[name] = condition
    if host.router.host_sessions is not None:  # what the hosts said stays evidence while it is fresh
        for report in state.host_reports:
            if report.server in servers:
                host.router.host_sessions.update(report)
    predecessor = Predecessor(host.router, host.store, host.clock)
    predecessor.adopt(state, servers)
    takeover.follow(predecessor)  # its table changes since it started us, then its sessions' news
    log.info("handoff: the old process stopped accepting; it finishes its %d session(s)",
             sum(state.connections.values()))
