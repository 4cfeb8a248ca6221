"""The running balancer as both sides of a handoff see it: `old.Host` (this process hands over)
and `new.NewHost` (this process takes over), over the composed parts (parts.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter

from rdpbalancer import clock
from rdpbalancer.background import Background
from rdpbalancer.config.compile import Snapshot
from rdpbalancer.handoff.messages import Address, HandoffError, RuntimeState
from rdpbalancer.handoff.old import Handover
from rdpbalancer.netaddr import format_addr
from rdpbalancer.parts import Parts
from rdpbalancer.relay.sockets import unsteer_group
from rdpbalancer.reloader import Reloader

log = logging.getLogger("rdpbalancer")


class HandoffHost:
    def __init__(self, parts: Parts, reloader: Reloader, background: Background, stopped: asyncio.Event) -> None:
        self.parts, self.reloader, self.background, self.stopped = parts, reloader, background, stopped
        self.listeners, self.store, self.control = parts.listeners, parts.store, parts.control
        self.workers, self.ops, self.router = parts.workers, parts.ops, parts.router
        self.handover: Handover | None = None  # set once a handoff to a new process started

    def start(self) -> bool:
        """Hand the listeners to a new process in the background; False if one already started."""
        if self.handover is not None:
            return False
        self.handover = Handover(self)
        self.reloader.hand_over()
        self.parts.ctx.tasks.spawn(self._handoff(self.handover), name="handoff")
        return True

    async def _handoff(self, handover: Handover) -> None:
        try:
            async with self.reloader.lock:  # no reload opens listeners while they change hands
                await handover.run()
        except HandoffError as exc:
            self.handover = None
            self.reloader.take_back()
            log.error("handoff failed: %s", exc)
            return
        await handover.drain_then_exit()

    # -- old.Host ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> str:
        return self.reloader.status.path

    @property
    def drain_timeout(self) -> float | None:
        return self.snapshot.config.balancer.drain_timeout

    def session_count(self) -> int:
        return len(self.parts.ctx.sessions)

    def runtime_state(self) -> RuntimeState:
        live = [s for s in self.parts.ctx.sessions.values() if s.relaying and s.server is not None]
        directory = self.router.host_sessions
        return RuntimeState(
            admin_overrides=dict(self.ops.admin_overrides), weight_overrides=dict(self.ops.weight_overrides),
            conditions=dict(self.router.conditions),
            connections=Counter(s.server.name for s in live if s.server is not None),
            active_users=Counter(s.decision.sticky_key for s in live
                                 if s.decision is not None and s.decision.sticky_key is not None),
            host_reports=list(directory.reports.values()) if directory is not None else [],
            clock_offset=clock.PROCESS_CLOCK.offset,
        )

    async def pause_services(self) -> None:
        await self.parts.admin.stop()
        await self.background.pause()
        await self.parts.groups.stop()

    async def resume_services(self, spare: dict[Address, socket.socket]) -> None:
        parts, snapshot = self.parts, self.snapshot
        self.listeners.servers = {}
        await self.listeners.open(snapshot.listen, reuse_port=snapshot.workers > 1, inherited=spare)
        if self.workers is not None:
            for sock in spare.values():
                unsteer_group(sock)
            await self.workers.resume()
        if snapshot.config.admin.enabled:
            await parts.admin.start()
        await parts.groups.start()
        self.background.start()
        log.warning("handoff: accepting again on %s",
                    ", ".join(format_addr(h, p) for h, p in self.listeners.addresses))

    def request_stop(self) -> None:
        self.stopped.set()

    # -- new.NewHost ------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self.parts.snapshot

    def clock(self) -> float:
        return self.parts.ctx.clock()
