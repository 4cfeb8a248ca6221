"""Composition root: builds and wires everything; start, stop and signal order. The business is
elsewhere: operator actions (operations.py), reload (reloader.py, config/restart.py), cluster
sync (cluster.py), graceful restart (handoff/), what readers see (view.py, ports.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import Counter

from rdpbalancer import __version__, clock
from rdpbalancer.admin.server import AdminServer
from rdpbalancer.cluster import ClusterSync
from rdpbalancer.config.compile import Snapshot, compile_config
from rdpbalancer.config.schema import Config
from rdpbalancer.directory.build import build_directory
from rdpbalancer.directory.model import GroupSnapshot
from rdpbalancer.directory.sync import DirectorySync
from rdpbalancer.handoff.messages import HandoffError, RuntimeState
from rdpbalancer.handoff.new import Takeover, take_over
from rdpbalancer.handoff.old import Handover
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.metrics import Metrics
from rdpbalancer.netaddr import format_addr
from rdpbalancer.operations import Operations
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.limits import NewUserBudget
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.listener import Address, ListenerSet
from rdpbalancer.relay.sockets import unsteer_group
from rdpbalancer.relay.splice import PipePool
from rdpbalancer.reloader import Prepared, Reloader
from rdpbalancer.runtime import tune_gc
from rdpbalancer.store.port import ClusterChannel, StickyStorePort
from rdpbalancer.store.redis import RedisCluster, RedisSettings, RedisStickyStore
from rdpbalancer.store.sqlite import SqliteStickyStore
from rdpbalancer.systemd import notify
from rdpbalancer.view import View
from rdpbalancer.workers.messages import WorkerSetup
from rdpbalancer.workers.primary import WorkerPool

log = logging.getLogger("rdpbalancer")

SWEEP_INTERVAL_S = 30.0  # expire entries and refresh open sessions' last_used this often


class Balancer:
    """A running balancer: `start()`, then `stop()`; `run()` does both around signals."""

    def __init__(self, config: Config) -> None:
        snapshot = compile_config(config)
        self.store, channel = build_store(config)
        self.table = StickyTable(ttl_s=config.sticky.ttl, max_entries=config.sticky.max_entries)
        directory = SessionDirectory(strip_domain=config.identity.strip_domain)
        self.router = Router(snapshot.policy, self.table, sessions=directory,
                             new_users=NewUserBudget(config.limits.new_users_per_source))
        self.monitor = HealthMonitor(self.router, list(snapshot.checks))
        self.control = LocalControl(self.router, self.store, self.monitor, clock.now)
        self.hosts = SessionPoller(directory, snapshot.sessions, clock=clock.now)
        self.ctx = RelayContext(control=self.control, settings=snapshot.relay)
        self.listeners = ListenerSet(self.ctx)
        self.ops = Operations(self.router, self.store, self.ctx, snapshot, self.hosts)
        self.ops.on_reload, self.ops.on_handoff = self._reload, self.start_handoff
        self.monitor.on_shutdown_sessions = self.ops.close_sessions_of
        self.cluster = ClusterSync(channel, self.control, self.ops, self.ctx.tasks) if channel is not None else None
        self.reloader = Reloader(self, config.source_path)
        self.directory = build_directory(config, self._groups_updated)
        self.view = View(self.ops, self.monitor, self.ctx, self.control, reloader=self.reloader,
                         listeners=self.listeners, directory=self.directory)
        self.workers: WorkerPool | None = None  # worker processes ([balancer] workers > 1)
        self.handover: Handover | None = None  # set once a handoff to a new process started
        self._sweeper: asyncio.Task[None] | None = None
        self._serving = False  # run(): set once started (signals other than stop wait for it)
        self.metrics = Metrics(self.view)
        self.ctx.observe_handshake = self.metrics.handshake.observe
        self.ctx.observe_connect = self.metrics.backend_connect.observe
        self.monitor.on_check = lambda kind, result: self.metrics.health_check.labels(kind).observe(result.latency_s)
        self.admin = AdminServer(self.view, self.ops, self.metrics, snapshot.config.admin)
        self._stopped = asyncio.Event()
        self._configure(snapshot)

    @property
    def snapshot(self) -> Snapshot:
        return self.ops.snapshot

    @property
    def addresses(self) -> list[Address]:
        return self.listeners.addresses

    def clock(self) -> float:
        return self.ctx.clock()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, takeover: Takeover | None = None) -> None:
        """Load the table, listen, serve. With `takeover`: a handoff's new process (see
        `rdpbalancer.handoff`): the listeners are the old process's, accepted from once it let go."""
        loop = asyncio.get_running_loop()
        if takeover is not None:
            await takeover.connect()
        entries = await asyncio.to_thread(self.store.load)
        self.store.start(loop)
        cleanup = self.table.load(entries, self.clock())
        await self.store.apply(cleanup)
        log.info("sticky table %s: %d entries loaded, %d expired dropped",
                 self.store.path, len(self.table), len(cleanup.dropped))
        await self.directory.start()  # cache first; one LDAP try, bounded by its timeouts
        try:
            if takeover is None:
                await self.listeners.open(self.snapshot.listen, reuse_port=self.snapshot.workers > 1)
            else:
                await take_over(takeover, self)
            if self.snapshot.config.admin.enabled:
                await self.admin.start()
            if self.snapshot.workers > 1:
                self.workers = self.view.workers = WorkerPool(self.snapshot.workers, self.control, self.ctx.sessions,
                                                              self.ctx.decisions, self._worker_setup)
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
            await self.directory.stop()
            await self.store.close()
            raise
        self._start_background()
        log.info("rdpbalancer %s listening on %s; pools: %s", __version__,
                 ", ".join(format_addr(h, p) for h, p in self.addresses),
                 ", ".join(f"{p.name}({len(p.members)} servers)" for p in self.snapshot.policy.pools))

    def _start_background(self) -> None:
        self.monitor.start()
        self.hosts.start()
        self._sweeper = self.ctx.tasks.spawn(self._sweep(), name="sticky-sweeper")
        if self.cluster is not None:
            self.cluster.start()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.store.apply_later(self.table.sweep(self.clock()))

    async def stop(self) -> None:
        self.listeners.close()
        if self.workers is not None:
            await self.workers.stop()  # their sessions end; their last messages are handled here
        await self.monitor.stop()
        await self.hosts.stop()
        await self.directory.stop()
        await self.admin.stop()
        sessions = list(self.ctx.sessions.values())
        for session in sessions:
            session.abort("shutdown")
        await self.ctx.tasks.cancel_all()
        await asyncio.sleep(0)  # let connection_lost callbacks record the sessions' ends
        if self.handover is None:  # after a handoff the successor owns the table on disk
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
        self._serving = True
        tune_gc()
        notify(f"READY=1\nSTATUS=listening on {len(self.listeners)} address(es)\nMAINPID={os.getpid()}")
        try:
            await self._stopped.wait()
        finally:
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
        self.start_handoff()

    def _on_reload_signal(self, sig: signal.Signals) -> None:
        if self._refused_while_starting(sig):
            return
        log.info("%s received, reloading %s", sig.name, self.reloader.status.path)
        self.ctx.tasks.spawn(self.reloader.reload(), name="reload")

    def _refused_while_starting(self, sig: signal.Signals) -> bool:
        if not self._serving:
            log.warning("%s received while starting: ignored (send it again once started)", sig.name)
        return not self._serving

    # -- reload (the Reloader's target) ----------------------------------------------------------

    async def _reload(self) -> str | None:
        return await self.reloader.reload()

    @property
    def admin_port(self) -> int | None:
        return self.admin.port

    @property
    def handed_over(self) -> bool:
        return self.handover is not None

    async def prepare(self, config: Config, snapshot: Snapshot) -> Prepared:
        directory = self._reloaded_directory(config)
        if config.admin.enabled:
            self.admin.reload_auth(config.admin)  # before anything changes: may refuse
        await self.listeners.open(snapshot.listen, reuse_port=snapshot.workers > 1)
        return Prepared(directory)

    async def commit(self, snapshot: Snapshot, prepared: Prepared) -> None:
        self._configure(snapshot)
        if self._serving:  # new sources, intervals, credentials or tokens (re-read by the compile)
            await self.hosts.restart(snapshot.sessions)
        self.listeners.close_removed(snapshot.listen)
        if self.workers is not None:
            await self.workers.reconfigure()
        if prepared.directory is not None:
            await self.directory.stop()
            self.directory = self.view.directory = prepared.directory
            await prepared.directory.start()

    def _configure(self, snapshot: Snapshot) -> None:
        """A configuration's settings into every component (at start, and each reload)."""
        config = snapshot.config
        self.ops.configure(snapshot)
        self.ctx.configure(snapshot.relay)
        self.table.ttl_s, self.table.max_entries = config.sticky.ttl, config.sticky.max_entries
        if self.router.sessions is not None:  # the hosts' lists keyed as the cookies are, from now on
            self.router.sessions.rekey(config.identity.strip_domain)
        self.store.set_commit_window(config.sticky.commit_window)
        self.monitor.update(list(snapshot.checks))
        self.monitor.shutdown_sessions_on_down = config.health.on_down == "shutdown-sessions"
        if self.router.new_users is not None:
            self.router.new_users.per_minute = config.limits.new_users_per_source
        if snapshot.relay.splice:
            self.ctx.splice = self.ctx.splice or PipePool(processes=snapshot.relay.processes)
        else:
            self.ctx.splice = None  # new sessions copy; running splice sessions keep their pump
        logging.getLogger().setLevel(config.log.level.upper())

    def _reloaded_directory(self, config: Config) -> DirectorySync | None:
        """A new DirectorySync when groups or the directory changed, else None (keep the old)."""
        old = self.snapshot.config
        if (old.groups, old.directory, old.sticky.path) == (config.groups, config.directory, config.sticky.path):
            return None
        return build_directory(config, self._groups_updated)

    def _groups_updated(self, snapshot: GroupSnapshot) -> None:
        self.router.membership = snapshot

    def _worker_setup(self) -> WorkerSetup:
        log_config = self.snapshot.config.log
        return WorkerSetup(self.snapshot.relay, self.listeners.worker_listen(), log_config.level, log_config.format)

    # -- handoff (the Handover's host) ---------------------------------------------------------------

    def start_handoff(self) -> bool:
        """Hand the listeners to a new process in the background; False if one already started."""
        if self.handover is not None:
            return False
        self.handover = Handover(self)
        self.ctx.tasks.spawn(self._handoff(self.handover), name="handoff")
        return True

    async def _handoff(self, handover: Handover) -> None:
        try:
            async with self.reloader.lock:  # no reload opens listeners while they change hands
                await handover.run()
        except HandoffError as exc:
            self.handover = None
            log.error("handoff failed: %s", exc)
            return
        await handover.drain_then_exit()

    @property
    def config_path(self) -> str:
        return self.reloader.status.path

    @property
    def drain_timeout(self) -> float | None:
        return self.snapshot.config.balancer.drain_timeout

    def session_count(self) -> int:
        return len(self.ctx.sessions)

    def runtime_state(self) -> RuntimeState:
        live = [s for s in self.ctx.sessions.values() if s.relaying and s.server is not None]
        return RuntimeState(
            admin_overrides=dict(self.ops.admin_overrides), weight_overrides=dict(self.ops.weight_overrides),
            conditions=dict(self.router.conditions),
            connections=Counter(s.server.name for s in live if s.server is not None),
            active_users=Counter(s.decision.sticky_key for s in live
                                 if s.decision is not None and s.decision.sticky_key is not None),
            host_reports=list(self.router.sessions.reports.values()) if self.router.sessions is not None else [],
            clock_offset=clock.PROCESS_CLOCK.offset,
        )

    async def pause_services(self) -> None:
        await self.admin.stop()
        await self.monitor.stop()
        await self.hosts.stop()
        await self.directory.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.cluster is not None:
            self.cluster.stop()  # it leaves: the new process counts our sessions itself

    async def resume_services(self, spare: dict[Address, socket.socket]) -> None:
        self.listeners.servers = {}
        await self.listeners.open(self.snapshot.listen, reuse_port=self.snapshot.workers > 1, inherited=spare)
        if self.workers is not None:
            for sock in spare.values():
                unsteer_group(sock)
            await self.workers.resume()
        if self.snapshot.config.admin.enabled:
            await self.admin.start()
        await self.directory.start()
        self._start_background()
        log.warning("handoff: accepting again on %s", ", ".join(format_addr(h, p) for h, p in self.addresses))


def build_store(config: Config) -> tuple[StickyStorePort, ClusterChannel | None]:
    """The sticky store, and the cluster channel when several nodes share it."""
    sticky = config.sticky
    local = SqliteStickyStore(sticky.path, sync=sticky.sync)
    if sticky.store == "sqlite":
        return local, None
    r = sticky.redis
    sentinels = tuple((h, int(p)) for h, _, p in (s.rpartition(":") for s in r.sentinels))
    settings = RedisSettings(url=r.url, sentinels=sentinels, service_name=r.service_name,
                             key_prefix=r.key_prefix, timeout_s=r.timeout)
    shared = RedisStickyStore(settings, ttl_s=sticky.ttl, local=local)
    return shared, RedisCluster(shared)
