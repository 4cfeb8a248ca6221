"""Composition root: builds and wires everything; start, stop and signal order. The business is
elsewhere: operator actions (operations.py), reload and the settings of every part (reloader.py,
config/restart.py), cluster sync (cluster.py), the background work (background.py), graceful
restart (handoff/, its host handoff/host.py), what readers see (view.py, ports.py, metrics.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time

from rdpbalancer import __version__, clock
from rdpbalancer.admin.server import AdminServer
from rdpbalancer.background import Background
from rdpbalancer.cluster import ClusterSync, sharing
from rdpbalancer.config.compile import Snapshot, compile_config
from rdpbalancer.config.schema import Config
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.build import Groups
from rdpbalancer.directory.sync import DirectorySync
from rdpbalancer.handoff.host import HandoffHost
from rdpbalancer.handoff.new import Takeover, take_over
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.metrics import Histograms, Metrics
from rdpbalancer.netaddr import format_addr
from rdpbalancer.operations import Operations, close_sessions_of
from rdpbalancer.parts import Parts
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.limits import NewUserBudget
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.relay.context import RelayContext, SessionView
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.listener import Address, ListenerSet
from rdpbalancer.relay.sockets import unsteer_group
from rdpbalancer.reloader import Reloader, check_transparent, configure
from rdpbalancer.runtime import tune_gc
from rdpbalancer.sticky_store import build_store
from rdpbalancer.systemd import notify
from rdpbalancer.view import View
from rdpbalancer.workers.messages import WorkerSetup
from rdpbalancer.workers.primary import WorkerPool

log = logging.getLogger("rdpbalancer")


class Balancer:
    """A running balancer: `start()`, then `stop()`; `run()` does both around signals."""

    def __init__(self, config: Config) -> None:
        snapshot = compile_config(config)
        self.store, channel = build_store(config)
        self.table = StickyTable(ttl_s=config.sticky.ttl, max_entries=config.sticky.max_entries)
        directory = SessionDirectory(strip_domain=config.identity.strip_domain)
        self.router = Router(snapshot.policy, self.table, host_sessions=directory,
                             new_users=NewUserBudget(config.limits.new_users_per_source))
        histograms = Histograms()  # observed by the relays and the health checks, exported by the metrics
        sessions: dict[str, SessionView] = {}  # every connection, by id (the relay context's registry)
        self.monitor = HealthMonitor(self.router, list(snapshot.checks), on_check=histograms.health_checked,
                                     on_shutdown_sessions=functools.partial(close_sessions_of, sessions))
        self.control = LocalControl(self.router, self.store, self.monitor, clock.now)
        self.hosts = SessionPoller(directory, snapshot.sessions, clock=clock.now)
        self.ctx = RelayContext(control=self.control, settings=snapshot.relay, sessions=sessions,
                                observe_handshake=histograms.handshake.observe,
                                observe_connect=histograms.backend_connect.observe)
        self.listeners = ListenerSet(self.ctx)
        self.ops = Operations(self.router, self.store, self.ctx, snapshot, self.hosts,
                              share=sharing(channel, self.ctx.tasks))
        self.groups = Groups(config, self.router)
        self.workers = WorkerPool(snapshot.workers, self.control, self.ctx.sessions, self.ctx.decisions,
                                  self._worker_setup) if snapshot.workers > 1 else None
        status = ConfigStatus(config.source_path, time.time())
        self.view = View(self.ops, self.monitor, self.ctx, config_status=status, listeners=self.listeners,
                         groups=self.groups, workers=self.workers)
        self.metrics = Metrics(self.view, histograms)
        self.admin = AdminServer(self.view, self.ops, self.metrics, snapshot.config.admin)
        parts = Parts(self.router, self.store, self.monitor, self.control, self.hosts, self.ctx, self.listeners,
                      self.ops, self.groups, self.admin, self.workers)
        self._serving = asyncio.Event()  # run(): set once started (signals other than stop wait for it)
        self._stopped = asyncio.Event()
        self.reloader = Reloader(parts, status, self._serving)
        self.cluster = ClusterSync(channel, self.control, self.ops, self.ctx.tasks) if channel is not None else None
        self.background = Background(parts, self.cluster)
        self.handoff = HandoffHost(parts, self.reloader, self.background, self._stopped)
        # the whole process's actions, for the admin API (a cycle: both act on the parts, ops among them)
        self.ops.on_reload, self.ops.on_handoff = self.reloader.reload, self.handoff.start
        configure(parts, snapshot)

    @property
    def snapshot(self) -> Snapshot:
        return self.ops.snapshot

    @property
    def addresses(self) -> list[Address]:
        return self.listeners.addresses

    @property
    def directory(self) -> DirectorySync:
        return self.groups.current

    def clock(self) -> float:
        return self.ctx.clock()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, takeover: Takeover | None = None) -> None:
        """Load the table, listen, serve. With `takeover`: a handoff's new process (see
        `rdpbalancer.handoff`): the listeners are the old process's, accepted from once it let go."""
        loop = asyncio.get_running_loop()
        await check_transparent(self.snapshot.relay.transparent)  # no capability: nothing starts
        if takeover is not None:
            await takeover.connect()
        entries = await asyncio.to_thread(self.store.load)
        self.store.start(loop)
        cleanup = self.table.load(entries, self.clock())
        await self.store.apply(cleanup)
        log.info("sticky table %s: %d entries loaded, %d expired dropped",
                 self.store.path, len(self.table), len(cleanup.dropped))
        await self.groups.start()  # cache first; one LDAP try, bounded by its timeouts
        try:
            if takeover is None:
                await self.listeners.open(self.snapshot.listen, reuse_port=self.snapshot.workers > 1)
            else:
                await take_over(takeover, self.handoff)
            if self.snapshot.config.admin.enabled:
                await self.admin.start()
            if self.workers is not None:
                await self.workers.start()
            if takeover is not None:
                await self.listeners.start_serving()
                for sock in self.listeners.first_sockets():
                    unsteer_group(sock)  # the old process steered every new connection here
                takeover.serving()
                log.info("handoff: took over the listeners")
        except BaseException:
            self.listeners.close()
            await self.admin.stop()
            await self.groups.stop()
            await self.store.close()
            raise
        self.background.start()
        log.info("rdpbalancer %s listening on %s; pools: %s", __version__,
                 ", ".join(format_addr(h, p) for h, p in self.addresses),
                 ", ".join(f"{p.name}({len(p.members)} servers)" for p in self.snapshot.policy.pools))

    async def stop(self) -> None:
        self.listeners.close()
        if self.workers is not None:
            await self.workers.stop()  # their sessions end; their last messages are handled here
        await self.monitor.stop()
        await self.hosts.stop()
        await self.groups.stop()
        await self.admin.stop()
        sessions = list(self.ctx.sessions.values())
        for session in sessions:
            session.abort("shutdown")
        await self.ctx.tasks.cancel_all()
        await asyncio.sleep(0)  # let connection_lost callbacks record the sessions' ends
        if self.handoff.handover is None:  # after a handoff the successor owns the table on disk
            self.store.apply_later(self.table.sweep(self.clock()))
        await self.store.close()
        await self.listeners.wait_closed()
        log.info("stopped (%d sessions were open)", len(sessions))

    def request_stop(self) -> None:
        self._stopped.set()

    async def run(self, takeover: Takeover | None = None) -> None:
        """Start, serve until SIGTERM/SIGINT (SIGHUP reloads, SIGUSR2 hands over to a new
        process), stop. Old handlers are restored.

        The handlers are installed before starting, so a signal that arrives during start-up
        cannot kill the process with its default action: SIGTERM then stops it right after the
        start, SIGHUP and SIGUSR2 are refused with a log line until it serves.
        """
        loop = asyncio.get_running_loop()
        installed = []
        handlers = {signal.SIGTERM: self._on_stop_signal, signal.SIGINT: self._on_stop_signal,
                    signal.SIGHUP: self._on_reload_signal, signal.SIGUSR2: self._on_handoff_signal}
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler, sig)
                installed.append(sig)
        try:
            await self.start(takeover)
        except BaseException:
            for sig in installed:
                loop.remove_signal_handler(sig)
            raise
        self._serving.set()
        tune_gc()
        notify(f"READY=1\nSTATUS=listening on {len(self.listeners)} address(es)\nMAINPID={os.getpid()}")
        try:
            await self._stopped.wait()
        finally:
            # after a handoff the new process is the service's main process (MAINPID=): the old one,
            # leaving once its last session ends, must not tell systemd the service is stopping
            handover = self.handoff.handover
            if handover is None or not handover.done:
                notify("STOPPING=1")
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("%s received, shutting down", sig.name)
        self.request_stop()

    def _on_handoff_signal(self, sig: signal.Signals) -> None:
        if self._refused_while_starting(sig):
            return
        log.info("%s received, handing over to a new process", sig.name)
        self.handoff.start()

    def _on_reload_signal(self, sig: signal.Signals) -> None:
        if self._refused_while_starting(sig):
            return
        log.info("%s received, reloading %s", sig.name, self.reloader.status.path)
        self.ctx.tasks.spawn(self.reloader.reload(), name="reload")

    def _refused_while_starting(self, sig: signal.Signals) -> bool:
        if not self._serving.is_set():
            log.warning("%s received while starting: ignored (send it again once started)", sig.name)
        return not self._serving.is_set()

    def _worker_setup(self) -> WorkerSetup:
        log_config = self.snapshot.config.log
        return WorkerSetup(self.snapshot.relay, self.listeners.worker_listen(), log_config.level, log_config.format)
