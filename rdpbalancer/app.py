"""Composition root: builds and wires everything, start/stop order, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from rdpbalancer import __version__
from rdpbalancer.config.compile import Snapshot, compile_config
from rdpbalancer.config.schema import Config
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.listener import bound_addresses, open_listeners
from rdpbalancer.relay.sockets import format_addr
from rdpbalancer.store.sqlite import SqliteStickyStore

log = logging.getLogger("rdpbalancer")

SWEEP_INTERVAL_S = 30.0  # expire entries and refresh open sessions' last_used this often


class Balancer:
    """A running balancer: `start()`, then `stop()`; `run()` does both around signals."""

    def __init__(self, config: Config) -> None:
        self.snapshot: Snapshot = compile_config(config)
        self.store = SqliteStickyStore(config.sticky.path, sync=config.sticky.sync)
        self.table = StickyTable(ttl_s=config.sticky.ttl, max_entries=config.sticky.max_entries)
        self.router = Router(self.snapshot.policy, self.table)
        for server, state in self.snapshot.admin_states.items():
            self.router.set_admin_state(server, state)
        self.monitor = HealthMonitor(
            self.router, list(self.snapshot.checks),
            shutdown_sessions_on_down=config.health.on_down == "shutdown-sessions",
        )
        self.ctx = RelayContext(router=self.router, store=self.store, settings=self.snapshot.relay,
                                backend_events=self.monitor)
        self.monitor.on_shutdown_sessions = self.close_sessions_of
        self.servers: list[asyncio.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        entries = await asyncio.to_thread(self.store.load)
        self.store.start(loop)
        cleanup = self.table.load(entries, self.ctx.clock())
        await self.store.apply(cleanup)
        log.info("sticky table %s: %d entries loaded, %d expired dropped",
                 self.store.path, len(self.table), len(cleanup.delete))
        try:
            self.servers = await open_listeners(self.ctx, list(self.snapshot.listen))
        except BaseException:
            await self.store.close()
            raise
        self.addresses = bound_addresses(self.servers)
        self.monitor.start()
        self.ctx.tasks.spawn(self._sweeper(), name="sticky-sweeper")
        log.info("rdpbalancer %s listening on %s; pools: %s", __version__,
                 ", ".join(format_addr(h, p) for h, p in self.addresses),
                 ", ".join(f"{p.name}({len(p.members)} servers)" for p in self.snapshot.policy.pools))

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.store.apply_later(self.table.sweep(self.ctx.clock()))

    def close_sessions_of(self, server: str) -> int:
        """Cut every live session relayed to `server` (admin action, on_down = shutdown-sessions)."""
        victims = [s for s in self.ctx.sessions.values() if s.server is not None and s.server.name == server]
        for session in victims:
            session.abort(f"server {server} shut down")
        return len(victims)

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        await self.monitor.stop()
        sessions = list(self.ctx.sessions.values())
        for session in sessions:
            session.abort("shutdown")
        await self.ctx.tasks.cancel_all()
        await asyncio.sleep(0)  # let connection_lost callbacks record the sessions' ends
        self.store.apply_later(self.table.sweep(self.ctx.clock()))
        await self.store.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        log.info("stopped (%d sessions were open)", len(sessions))

    def request_stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop. Previous signal handlers are restored."""
        await self.start()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            await self._stopped.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received, shutting down", sig.name)
        self.request_stop()
