"""Graceful restart and upgrade: a new process takes the listeners, the old one finishes its sessions.

Started by SIGUSR2, `POST /api/v1/handoff` or `rdpbalancer ctl handoff` on the running (old)
process:

1. The old process starts `rdpbalancer run -c <same file> --takeover-fd N` (the code installed
   on disk now: that is the upgrade), passing its listening sockets and one end of a socketpair.
   It keeps accepting and relaying meanwhile.
2. The new process loads the configuration and the sticky table, wraps the inherited listening
   sockets without accepting yet, and says "loaded". A bad configuration or any start-up failure
   ends it here; the old process logs why and goes on as if nothing happened.
3. The old process stops accepting (the sockets stay open in the new one: connections arriving
   now wait in the kernel's queue, none is refused), stops its admin API, health checks and
   directory sync, flushes its sticky writes to disk and sends "yours" with its run-time state:
   drain/maintenance and weight overrides, health, and its live sessions (per server, per user).
4. The new process reads the sticky entries written since it loaded them, takes over that state,
   starts its admin API, starts accepting, says "serving" and tells systemd it is the main process
   now. If it dies or stalls before "serving", the old process accepts again on the same sockets
   (it kept a duplicate of each) and restarts its API and checks: a failed upgrade drops nothing
   but the connections the dead process had accepted itself.
5. The old process relays its sessions until they end (each end is passed on, so the new
   process's leastconn counts and sticky expiry stay right), then exits; with
   `[balancer] drain_timeout` it cuts what is left after that long.

With workers (`[balancer] workers` > 1), step 3 starts by steering each SO_REUSEPORT group's new
connections to the primary's socket (BPF "return socket 0"; the new process holds that socket),
then the old workers accept what is queued on their sockets and close them; the new process
removes the steering once its own workers listen. Old sessions that were still connecting at
step 3 are reported when they start relaying ("opened") as well as when they end ("closed").

The sticky table is one SQLite file used by both processes in turn (WAL, busy timeout): the old
process only refreshes `last_used` of its ending sessions after step 3.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.model import AdminState, Server, ServerCondition
from rdpbalancer.policy.ports import StickyStore
from rdpbalancer.policy.sticky import Change
from rdpbalancer.runtime import own_command
from rdpbalancer.workers.ipc import Channel, Message

if TYPE_CHECKING:
    from rdpbalancer.app import Balancer

log = logging.getLogger("rdpbalancer.handoff")

LOAD_TIMEOUT_S = 300.0  # the new process's start-up, table included (1M entries take seconds)
TAKE_TIMEOUT_S = 30.0  # from "loaded" to accepting


class HandoffError(Exception):
    """A handoff could not start or the new process failed before taking over."""


@dataclass(slots=True)
class RuntimeState:
    """What the old process hands over besides the sockets."""

    admin_overrides: dict[str, AdminState] = field(default_factory=dict)
    weight_overrides: dict[str, int] = field(default_factory=dict)
    conditions: dict[str, ServerCondition] = field(default_factory=dict)
    connections: Counter[str] = field(default_factory=Counter)  # server -> sessions still in the old process
    active_users: Counter[str] = field(default_factory=Counter)  # sticky key -> its sessions there


# -- the old process ----------------------------------------------------------------------------------

class Handover:
    """The old process's side, from spawning the successor to its last session's end."""

    def __init__(self, bal: Balancer) -> None:
        self.bal = bal
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self._loaded = asyncio.Event()
        self._serving = asyncio.Event()
        self._lost = asyncio.Event()
        self.done = False

    async def run(self) -> None:
        """Spawn the successor and hand over; raises HandoffError (the old process serves on)."""
        try:
            await self._run()
        except BaseException:
            self.bal.store.watch(None)
            raise

    async def _run(self) -> None:
        bal = self.bal
        ours, theirs = socket.socketpair()
        listeners = {}
        for address, server in bal.listeners.items():
            for sock in server.sockets:
                listeners[sock.fileno()] = address
        loop = asyncio.get_running_loop()
        self.channel = Channel(self._on_message, lambda _exc: self._lost.set())
        await loop.connect_accepted_socket(lambda: self.channel, ours)  # queued until the child reads
        self.channel.send(("listeners", listeners))
        # Every change of the table from here on goes to the successor, in order: what it loads
        # from the file is at least what was on disk when it started (the barrier), and the
        # journal brings it up to date, deletions and this process's late assignments included.
        bal.store.watch(self._changed)
        await bal.store.barrier()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *own_command("run", "-c", bal.status.path, "--takeover-fd", str(theirs.fileno())),
                pass_fds=[theirs.fileno(), *listeners], stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            self.channel.close()
            raise HandoffError(f"cannot start the new process: {exc}") from exc
        finally:
            theirs.close()
        log.info("handoff: new process pid %d started; it loads the configuration and the sticky table",
                 self.process.pid)
        if not await self._wait(self._loaded, LOAD_TIMEOUT_S):
            await self._abandon()
            raise HandoffError("the new process exited or failed before taking over (see its log lines); "
                               "this process goes on serving")
        spare = {address: socket.fromfd(fd, *_kind(bal, address)) for fd, address in listeners.items()}
        try:
            await bal.stop_accepting()
            self.channel.send(("yours", bal.runtime_state()))
            # the successor counts what runs here: the sessions in the state, those that start
            # relaying from now on (they were still connecting), and each end
            bal.control.on_finished = self._session_closed
            bal.control.on_relaying = self._session_opened
            bal.control.persist_ends = False  # ... and is the only writer of the table from now on
            if not await self._wait(self._serving, TAKE_TIMEOUT_S):
                await self._abandon()
                bal.control.on_finished, bal.control.on_relaying, bal.control.persist_ends = None, None, True
                await bal.resume_accepting(spare)
                spare = {}  # the listeners own them again
                raise HandoffError("the new process failed while taking over (see its log lines); "
                                   "this process accepts again")
        finally:
            for sock in spare.values():
                sock.close()
        log.info("handoff: pid %d accepts new connections now; %d session(s) stay here until they end",
                 self.process.pid, len(bal.ctx.sessions))
        self.done = True

    async def _wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        lost = asyncio.ensure_future(self._lost.wait())
        got = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({lost, got}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            got.cancel()
        return event.is_set()

    async def _abandon(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def _on_message(self, message: Message) -> None:
        if message[0] == "loaded":
            self._loaded.set()
        elif message[0] == "serving":
            self._serving.set()

    def _changed(self, change: Change) -> None:
        if self.channel is not None:
            self.channel.send(("changed", change))

    def _session_opened(self, server: str, key: str | None, now: float) -> None:
        if self.channel is not None:
            self.channel.send(("opened", server, key, now))

    def _session_closed(self, server: str, key: str | None, now: float) -> None:
        if self.channel is not None:
            self.channel.send(("closed", server, key, now))


def _kind(bal: Balancer, address: tuple[str, int]) -> tuple[int, int]:
    sock = bal.listeners[address].sockets[0]
    return sock.family, sock.type


# -- the new process ----------------------------------------------------------------------------------

class Takeover:
    """The new process's side: inherited sockets, then the old process's state."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.channel: Channel | None = None
        self.listeners: dict[int, tuple[str, int]] = {}  # inherited fd -> configured address
        self._got_listeners = asyncio.Event()
        self._state: asyncio.Future[RuntimeState] | None = None
        self._predecessor: Predecessor | None = None  # set by `follow`
        self._early: list[Message] = []  # reports that came before that
        self._lost = False

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._state = loop.create_future()
        self.channel = Channel(self._on_message, self._on_lost)
        await loop.connect_accepted_socket(lambda: self.channel, socket.socket(fileno=self.fd))
        async with asyncio.timeout(TAKE_TIMEOUT_S):
            await self._got_listeners.wait()

    def sockets(self) -> dict[tuple[str, int], socket.socket]:
        return {tuple(address): socket.socket(fileno=fd) for fd, address in self.listeners.items()}  # type: ignore[misc]

    async def loaded(self) -> RuntimeState:
        """Tell the old process we are ready; its state once it stopped accepting."""
        assert self.channel is not None and self._state is not None
        self.channel.send(("loaded",))
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
            self.channel.send(("serving",))

    def _on_message(self, message: Message) -> None:
        kind = message[0]
        if kind == "listeners":
            self.listeners = message[1]
            self._got_listeners.set()
        elif kind == "yours" and self._state is not None and not self._state.done():
            self._state.set_result(message[1])
        elif kind in ("opened", "closed", "changed"):
            if self._predecessor is None:
                self._early.append(message)  # while the new process still loads the table
            else:
                self._predecessor.on_message(message)

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
            self.active[key] += count

    def on_message(self, message: Message) -> None:
        match message:
            case ("opened", str(server), key, float(now)):
                self._opened(server, key, now)
            case ("closed", str(server), key, float(now)):
                self._closed(server, key, now)
            case ("changed", Change() as change):
                self._changed(change)
            case _:
                log.error("handoff: unknown report %r from the old process; ignored", message[0])

    def _opened(self, server: str, key: str | None, now: float) -> None:
        self.router.connections[server] += 1
        self.connections[server] += 1
        if key is not None:
            self.table.session_opened(key, now)
            self.active[key] += 1

    def _closed(self, server: str, key: str | None, now: float) -> None:
        if self.connections[server] <= 0:
            return  # not one we counted (the old process's report crossed a reload)
        self.connections[server] -= 1
        self.router.closed(Server(server, "", 0))
        if key is not None and self.active[key] > 0:
            self.active[key] -= 1
            entry = self.table.session_closed(key, now)
            if entry is not None:
                self.store.apply_later(self.table.refreshed(entry))

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
                entry = self.table.session_closed(key, now)
                if entry is not None:
                    self.store.apply_later(self.table.refreshed(entry))
        self.active.clear()
