"""The running (old) process's side of a handoff: from starting the successor to its own exit."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Protocol

from rdpbalancer import tasks
from rdpbalancer.handoff.messages import (
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
from rdpbalancer.policy.sticky import Change
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.facts import Fact, Finished, Relaying
from rdpbalancer.relay.listener import Address, ListenerSet
from rdpbalancer.relay.sockets import steer_group_to_first
from rdpbalancer.runtime import Child, own_command
from rdpbalancer.store.port import StickyStorePort
from rdpbalancer.workers.primary import WorkerPool

log = logging.getLogger("rdpbalancer.handoff")

LOAD_TIMEOUT_S = 300.0  # the new process's start-up, table included (1M entries take seconds)
TAKE_TIMEOUT_S = 30.0  # from "loaded" to accepting
DRAIN_POLL_S = 0.2  # how often the drain looks whether the last session ended


class Host(Protocol):
    """The running balancer as its handoff sees it."""

    @property
    def listeners(self) -> ListenerSet: ...

    @property
    def store(self) -> StickyStorePort: ...

    @property
    def control(self) -> LocalControl: ...

    @property
    def workers(self) -> WorkerPool | None: ...

    @property
    def config_path(self) -> str: ...

    @property
    def drain_timeout(self) -> float | None: ...

    def session_count(self) -> int:
        """Connections this process still holds (handshaking, routing and relaying)."""
        ...

    def runtime_state(self) -> RuntimeState: ...

    async def pause_services(self) -> None:
        """The admin API, health checks, directory sync, sweeper and cluster heartbeat stop."""
        ...

    async def resume_services(self, spare: dict[Address, socket.socket]) -> None:
        """A failed handoff: accept again on the kept sockets, restart what pause_services stopped."""
        ...

    def request_stop(self) -> None: ...


class Handover:
    """The old process's side, from spawning the successor to its last session's end."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.process: Child | None = None
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
            self.host.store.watch(None)
            raise

    async def _run(self) -> None:
        host = self.host
        ours, theirs = socket.socketpair()
        fds = host.listeners.by_fd()
        loop = asyncio.get_running_loop()
        channel = self.channel = Channel(self._on_message, lambda _exc: self._lost.set())
        await loop.connect_accepted_socket(lambda: channel, ours)  # queued until the child reads
        channel.send(Listeners(fds))
        # Every change of the table from here on goes to the successor, in order: what it loads
        # from the file is at least what was on disk when it started (the barrier), and the
        # journal brings it up to date, deletions and this process's late assignments included.
        host.store.watch(self._changed)
        await host.store.barrier()
        try:
            self.process = Child(own_command("run", "-c", host.config_path, "--takeover-fd", str(theirs.fileno())),
                                 pass_fds=[theirs.fileno(), *fds])
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
        spare = {address: socket.fromfd(fd, *host.listeners.family_of(address)) for fd, address in fds.items()}
        try:
            await self._stop_accepting()
            self.channel.send(Yours(host.runtime_state()))
            # the successor counts what runs here: the sessions in the state, those that start
            # relaying from now on (they were still connecting), and each end
            host.control.successor = self  # ... and is the only writer of the table from now on
            if not await self._wait(self._serving, TAKE_TIMEOUT_S):
                await self._abandon()
                host.control.successor = None
                await host.resume_services(spare)
                spare = {}  # the listeners own them again
                raise HandoffError("the new process failed while taking over (see its log lines); "
                                   "this process accepts again")
        finally:
            for sock in spare.values():
                sock.close()
        log.info("handoff: pid %d accepts new connections now; %d session(s) stay here until they end",
                 self.process.pid, host.session_count())
        self.done = True

    async def _stop_accepting(self) -> None:
        """The listeners, the admin API and the background work go; relays stay. With workers:
        every new connection is steered to the primary's socket (which the new process holds
        too) before the workers close theirs, so none is dropped from their queues."""
        host = self.host
        if host.workers is not None:
            for sock in host.listeners.first_sockets():
                if not steer_group_to_first(sock):
                    log.warning("handoff: cannot steer SO_REUSEPORT connections (kernel without "
                                "SO_ATTACH_REUSEPORT_CBPF); the workers' queued connections may be reset")
            await host.workers.quiesce()
        host.listeners.close()
        await host.pause_services()
        await host.store.barrier()

    async def drain_then_exit(self) -> None:
        """Relay what is left until it ends: our sessions, and the workers' connections (a worker
        exits once its last one ended, those accepted before the handoff that had not sent their
        request yet included); `drain_timeout` cuts the rest."""
        host = self.host
        timeout = host.drain_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while host.session_count() or (host.workers is not None and host.workers.any_alive):
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("handoff: drain_timeout reached; cutting %d session(s)", host.session_count())
                break
            await asyncio.sleep(DRAIN_POLL_S)
        log.info("handoff: the last session ended here; exiting")
        host.request_stop()

    async def _wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        lost = tasks.start(self._lost.wait())
        got = tasks.start(event.wait())
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
        match message:
            case Loaded():
                self._loaded.set()
            case Serving():
                self._serving.set()
            case _:
                log.error("handoff: unknown message %s from the new process; ignored", type(message).__name__)

    def _changed(self, change: Change) -> None:
        if self.channel is not None:
            self.channel.send(Changed(change))

    def seen(self, fact: Fact, at: float) -> None:
        """A session fact of this process (relay/facts.py), once the successor counts its sessions:
        a session that starts relaying (it was still connecting when the listeners moved) and
        each end go to it; the rest is this process's own business."""
        if self.channel is None:
            return
        match fact:
            case Relaying(_, info):
                self.channel.send(Opened(info.server.name, info.decision.sticky_key, at))
            case Finished(_, decision, server):
                self.channel.send(Closed(server.name, decision.sticky_key, at))
