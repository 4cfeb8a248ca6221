"""What runs beside the relays once the balancer serves: health checks, the hosts' session lists,
the sticky sweeper and the cluster heartbeat. A handoff pauses it; a failed one starts it again."""

from __future__ import annotations

import asyncio

from rdpbalancer.cluster import ClusterSync
from rdpbalancer.parts import Parts

SWEEP_INTERVAL_S = 30.0  # expire entries and refresh open sessions' last_used this often


class Background:
    def __init__(self, parts: Parts, cluster: ClusterSync | None) -> None:
        self.parts, self.cluster = parts, cluster
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.parts.monitor.start()
        self.parts.hosts.start()
        self._sweeper = self.parts.ctx.tasks.spawn(self._sweep(), name="sticky-sweeper")
        if self.cluster is not None:
            self.cluster.start()

    async def pause(self) -> None:
        """A handoff: the new process checks, polls, sweeps and counts from now on."""
        await self.parts.monitor.stop()
        await self.parts.hosts.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.cluster is not None:
            self.cluster.stop()  # it leaves: the new process counts our sessions itself

    async def _sweep(self) -> None:
        parts = self.parts
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            parts.store.apply_later(parts.router.table.sweep(parts.ctx.clock()))
