"""Composition root: builds and wires everything, start/stop order, signals, reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, replace

from rdpbalancer import __version__
from rdpbalancer.admin.server import AdminError, AdminServer
from rdpbalancer.config import ConfigError, load_config
from rdpbalancer.config.compile import Snapshot, compile_config
from rdpbalancer.config.schema import Config
from rdpbalancer.config.types import MAX_WEIGHT
from rdpbalancer.directory.build import build_directory
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.model import GroupSnapshot
from rdpbalancer.directory.sync import DirectorySync
from rdpbalancer.handoff import HandoffError, Handover, Predecessor, RuntimeState, Takeover
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.metrics import Metrics
from rdpbalancer.netaddr import format_addr
from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.limits import NewUserBudget
from rdpbalancer.policy.model import AdminState
from rdpbalancer.policy.sticky import Change, StickyEntry, StickyTable
from rdpbalancer.relay.context import RelayContext, Stats
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.listener import ListenError, open_listeners
from rdpbalancer.relay.sockets import steer_group_to_first, unsteer_group
from rdpbalancer.relay.splice import PipePool
from rdpbalancer.store.redis import ClusterView, RedisSettings, RedisStickyStore
from rdpbalancer.store.sqlite import SqliteStickyStore
from rdpbalancer.systemd import monotonic_usec, notify
from rdpbalancer.workers.primary import WorkerPool, WorkerSetup

log = logging.getLogger("rdpbalancer")

SWEEP_INTERVAL_S = 30.0  # expire entries and refresh open sessions' last_used this often
HEARTBEAT_S = 1.0  # with a shared store: publish our session counts, read the others', this often
HEARTBEAT_EXPIRE_S = 3 * HEARTBEAT_S  # a node silent this long (crashed) leaves the totals

Address = tuple[str, int]


@dataclass(slots=True)
class ConfigStatus:
    """What the admin API shows about the configuration."""

    path: str
    loaded_at: float
    last_reload_at: float | None = None
    last_reload_error: str | None = None
    reloads_ok: int = 0
    reloads_failed: int = 0


class Balancer:
    """A running balancer: `start()`, then `stop()`; `run()` does both around signals."""

    def __init__(self, config: Config) -> None:
        self.snapshot: Snapshot = compile_config(config)
        self.store = build_store(config)
        self.table = StickyTable(ttl_s=config.sticky.ttl, max_entries=config.sticky.max_entries)
        self.router = Router(self.snapshot.policy, self.table)
        self.monitor = HealthMonitor(self.router, list(self.snapshot.checks))
        self.control = LocalControl(self.router, self.store, self.monitor, time.time)
        self.control.new_users = NewUserBudget(config.limits.new_users_per_source)
        self.ctx = RelayContext(control=self.control, settings=self.snapshot.relay)
        self.monitor.on_shutdown_sessions = self.close_sessions_of
        self.admin_overrides: dict[str, AdminState] = {}  # set at run time; survive reloads
        self.weight_overrides: dict[str, int] = {}
        self.listeners: dict[Address, asyncio.Server] = {}
        self.status = ConfigStatus(config.source_path, time.time())
        self.directory = build_directory(config, self._groups_updated)
        self.workers: WorkerPool | None = None  # worker processes ([balancer] workers > 1)
        self.handover: Handover | None = None  # set once a handoff to a new process started
        self._sweeper_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None  # a shared store's cluster heartbeat
        self._serving = False  # run(): set once started (signals other than stop wait for it)
        self.metrics = Metrics(self)
        self.ctx.observe_handshake = self.metrics.handshake.observe
        self.ctx.observe_connect = self.metrics.backend_connect.observe
        self.monitor.on_check = lambda kind, result: self.metrics.health_check.labels(kind).observe(result.latency_s)
        self.admin = AdminServer(self)
        self._stopped = asyncio.Event()
        self._reloading = asyncio.Lock()  # one reload at a time (see reload)
        self._apply_settings(self.snapshot)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, takeover: Takeover | None = None) -> None:
        """Load the table, listen, serve. With `takeover`: a handoff's new process (see
        `rdpbalancer.handoff`): the listeners are the old process's, accepted from once it let go."""
        loop = asyncio.get_running_loop()
        if takeover is not None:
            await takeover.connect()
        entries = await asyncio.to_thread(self.store.load)
        self.store.start(loop)
        cleanup = self.table.load(entries, self.ctx.clock())
        await self.store.apply(cleanup)
        log.info("sticky table %s: %d entries loaded, %d expired dropped",
                 self.store.path, len(self.table), len(cleanup.dropped))
        await self.directory.start()  # cache first; one LDAP try, bounded by its timeouts
        try:
            if takeover is None:
                await self._open_listeners(self.snapshot.listen)
            else:
                await self._take_over(takeover)
            if self.snapshot.config.admin.enabled:
                await self.admin.start()
            if self.snapshot.workers > 1:
                self.workers = WorkerPool(self.snapshot.workers, self.control, self.ctx.sessions,
                                          self.ctx.decisions, self._worker_setup)
                await self.workers.start()
            if takeover is not None:
                for server in self.listeners.values():
                    await server.start_serving()
                    unsteer_group(server.sockets[0])  # type: ignore[arg-type]  # the old process steered all here
                takeover.serving()
                log.info("handoff: took over the listeners")
        except BaseException:
            for server in self.listeners.values():
                server.close()
            await self.admin.stop()
            await self.directory.stop()
            await self.store.close()
            raise
        self._start_background()
        log.info("rdpbalancer %s listening on %s; pools: %s", __version__,
                 ", ".join(format_addr(h, p) for h, p in self.addresses),
                 ", ".join(f"{p.name}({len(p.members)} servers)" for p in self.snapshot.policy.pools))

    async def _take_over(self, takeover: Takeover) -> None:
        inherited = takeover.sockets()
        try:
            await self._open_listeners(self.snapshot.listen, inherited=inherited, serving=False)
        finally:
            for address, sock in inherited.items():
                if address not in self.snapshot.listen:
                    sock.close()  # the old process listened there; the new configuration does not
        state = await takeover.loaded()  # the old process stopped accepting and flushed its writes
        self._adopt(state)
        predecessor = Predecessor(self.router, self.store, self.ctx.clock)
        predecessor.adopt(state, self.snapshot.policy.servers())
        takeover.follow(predecessor)  # its table changes since it started us, then its sessions' news
        log.info("handoff: the old process stopped accepting; it finishes its %d session(s)",
                 sum(state.connections.values()))

    def _adopt(self, state: RuntimeState) -> None:
        servers = self.snapshot.policy.servers()
        self.admin_overrides = {k: v for k, v in state.admin_overrides.items() if k in servers}
        self.weight_overrides = {k: v for k, v in state.weight_overrides.items() if k in servers}
        self.router.swap_policy(self._with_weights(self.snapshot.policy))
        for name, condition in state.conditions.items():
            if name in servers:
                self.router.conditions[name] = condition
        self._apply_settings(self.snapshot)

    # -- handoff (the old process's side) ---------------------------------------------------------

    async def handoff(self) -> str | None:
        """Hand the listeners to a new process (same file, code as installed now); None on
        success, else why not (this process then goes on serving)."""
        if self.handover is not None:
            return "a handoff already happened or is in progress"
        self.handover = Handover(self)
        try:
            async with self._reloading:  # no reload opens listeners while they change hands
                await self.handover.run()
        except HandoffError as exc:
            self.handover = None
            log.error("handoff failed: %s", exc)
            return str(exc)
        self.ctx.tasks.spawn(self._drain_then_exit(), name="drain")
        return None

    async def stop_accepting(self) -> None:
        """Handoff step 3: the listeners, the admin API and the background work go; relays stay.
        With workers: every new connection is steered to the primary's socket (which the new
        process holds too) before the workers close theirs, so none is dropped from their queues."""
        if self.workers is not None:
            for server in self.listeners.values():
                if not steer_group_to_first(server.sockets[0]):  # type: ignore[arg-type]
                    log.warning("handoff: cannot steer SO_REUSEPORT connections (kernel without "
                                "SO_ATTACH_REUSEPORT_CBPF); the workers' queued connections may be reset")
            await self.workers.quiesce()
        for server in self.listeners.values():
            server.close()
        await self.admin.stop()
        await self.monitor.stop()
        await self.directory.stop()
        for task in (self._sweeper_task, self._heartbeat_task):
            if task is not None:
                task.cancel()  # the heartbeat leaves: the new process counts our sessions itself
        await self.store.barrier()

    async def resume_accepting(self, spare: dict[Address, socket.socket]) -> None:
        """A handoff failed after `stop_accepting`: accept again on the kept sockets, restart the
        API and the background work."""
        self.listeners = {}
        await self._open_listeners(self.snapshot.listen, inherited=spare)
        if self.workers is not None:
            for sock in spare.values():
                unsteer_group(sock)
            await self.workers.resume()
        if self.snapshot.config.admin.enabled:
            await self.admin.start()
        await self.directory.start()
        self._start_background()
        log.warning("handoff: accepting again on %s", ", ".join(format_addr(h, p) for h, p in self.addresses))

    def _start_background(self) -> None:
        self.monitor.start()
        self._sweeper_task = self.ctx.tasks.spawn(self._sweeper(), name="sticky-sweeper")
        if isinstance(self.store, RedisStickyStore):
            self._heartbeat_task = self.ctx.tasks.spawn(self._cluster_heartbeat(self.store), name="cluster-heartbeat")

    def runtime_state(self) -> RuntimeState:
        live = [s for s in self.ctx.sessions.values() if s.relaying and s.server is not None]
        return RuntimeState(
            admin_overrides=dict(self.admin_overrides), weight_overrides=dict(self.weight_overrides),
            conditions=dict(self.router.conditions), connections=Counter(s.server.name for s in live),
            active_users=Counter(s.decision.sticky_key for s in live
                                 if s.decision is not None and s.decision.sticky_key is not None),
        )

    async def _drain_then_exit(self) -> None:
        timeout = self.snapshot.config.balancer.drain_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        # our sessions, and the workers' connections: a worker exits once its last one ended,
        # those accepted before the handoff that had not sent their request yet included
        while self.ctx.sessions or (self.workers is not None and self.workers.any_alive):
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("handoff: drain_timeout reached; cutting %d session(s)", len(self.ctx.sessions))
                break
            await asyncio.sleep(0.2)
        log.info("handoff: the last session ended here; exiting")
        self.request_stop()

    @property
    def addresses(self) -> list[Address]:
        """The bound addresses (port 0 resolved), in configuration order."""
        out = []
        for server in self.listeners.values():
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((host, port))
        return out

    def _worker_setup(self) -> WorkerSetup:
        log_config = self.snapshot.config.log
        listen = tuple((format_addr(*configured), host, port)
                       for configured, server in self.listeners.items()
                       for host, port, *_ in (sock.getsockname() for sock in server.sockets))
        return WorkerSetup(self.snapshot.relay, listen, log_config.level, log_config.format)

    def stats(self) -> Stats:
        """Counters of every process (the workers' as of their last report, about a second old)."""
        if self.workers is None:
            return self.ctx.stats
        return self.workers.merged_stats(self.ctx.stats)

    async def stop(self) -> None:
        for server in self.listeners.values():
            server.close()
        if self.workers is not None:
            await self.workers.stop()  # their sessions end; their last messages are handled here
        await self.monitor.stop()
        await self.directory.stop()
        await self.admin.stop()
        sessions = list(self.ctx.sessions.values())
        for session in sessions:
            session.abort("shutdown")
        await self.ctx.tasks.cancel_all()
        await asyncio.sleep(0)  # let connection_lost callbacks record the sessions' ends
        if self.handover is None:  # after a handoff the successor owns the table on disk
            self.store.apply_later(self.table.sweep(self.ctx.clock()))
        await self.store.close()
        for server in self.listeners.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
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
        if not self._serving:
            log.warning("%s received while starting: ignored (send it again once started)", sig.name)
            return
        log.info("%s received, handing over to a new process", sig.name)
        self.ctx.tasks.spawn(self.handoff(), name="handoff")

    def _on_reload_signal(self, sig: signal.Signals) -> None:
        if not self._serving:
            log.warning("%s received while starting: ignored (send it again once started)", sig.name)
            return
        log.info("%s received, reloading %s", sig.name, self.status.path)
        self.ctx.tasks.spawn(self.reload(), name="reload")

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> str | None:
        """Re-read the configuration file and swap it in; None on success, else the error.

        The new configuration is parsed, validated and compiled beside the old one; on any
        error the old one stays in force. Live sessions are never touched, and the sticky
        table is kept (only entries of servers that no longer exist are dropped).

        Reloads queue (SIGHUP, the API and ctl at once): each one reads the file in its turn and
        compares it with what the one before it left in force.
        """
        async with self._reloading:
            if self.handover is not None:
                return self._reload_failed("this process is handing over or handed over to a new one: "
                                           "reload that one")
            return await self._reload()

    async def _reload(self) -> str | None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")
        self.status.last_reload_at = time.time()
        try:
            config = await asyncio.to_thread(load_config, self.status.path)
            snapshot = compile_config(config)
            _check_reloadable(self.snapshot.config, config)
            _check_admin_reloadable(self.snapshot.config, config, self.admin.port)
            directory = self._reloaded_directory(config)
            if config.admin.enabled:
                self.admin.reload_auth(config.admin)  # before anything changes: may refuse
            await self._open_listeners(snapshot.listen)
        except (ConfigError, ListenError, ReloadError, DirectoryError, AdminError) as exc:
            return self._reload_failed(str(exc))
        self._swap(snapshot)
        if self.workers is not None:
            await self.workers.reconfigure()
        if directory is not None:
            await self.directory.stop()
            self.directory = directory
            await directory.start()
        self.status.last_reload_error = None
        self.status.reloads_ok += 1
        log.info("configuration reloaded from %s", self.status.path)
        notify("READY=1")
        return None

    def _reloaded_directory(self, config: Config) -> DirectorySync | None:
        """A new DirectorySync when groups or the directory changed, else None (keep the old)."""
        old = self.snapshot.config
        if (old.groups, old.directory, old.sticky.path) == (config.groups, config.directory, config.sticky.path):
            return None
        return build_directory(config, self._groups_updated)

    def _groups_updated(self, snapshot: GroupSnapshot) -> None:
        self.router.membership = snapshot

    def _reload_failed(self, error: str) -> str:
        self.status.last_reload_error = error
        self.status.reloads_failed += 1
        log.error("reload refused, the running configuration stays in force:\n%s", error)
        notify("READY=1")
        return error

    def _swap(self, snapshot: Snapshot) -> None:
        old = self.snapshot
        self.snapshot = snapshot
        self.weight_overrides = {k: v for k, v in self.weight_overrides.items() if k in snapshot.policy.servers()}
        self.router.swap_policy(self._with_weights(snapshot.policy))
        self.ctx.configure(snapshot.relay)
        self.table.ttl_s, self.table.max_entries = snapshot.config.sticky.ttl, snapshot.config.sticky.max_entries
        self.monitor.update(list(snapshot.checks))
        self._apply_settings(snapshot)
        gone = set(old.policy.servers()) - set(snapshot.policy.servers())
        for name in gone:
            self.store.apply_later(self.table.delete_server(name))
            self.admin_overrides.pop(name, None)
            self.router.conditions.pop(name, None)
            log.info("server %s removed: its sticky entries are dropped, its live sessions go on", name)
        for address in set(self.listeners) - set(snapshot.listen):
            self.listeners.pop(address).close()
            log.info("stopped listening on %s (live sessions go on)", format_addr(*address))

    def _apply_settings(self, snapshot: Snapshot) -> None:
        self.control.new_users.per_minute = snapshot.config.limits.new_users_per_source
        config = snapshot.config
        if snapshot.relay.splice:
            self.ctx.splice = self.ctx.splice or PipePool(processes=snapshot.relay.processes)
        else:
            self.ctx.splice = None  # new sessions copy; running splice sessions keep their pump
        self.monitor.shutdown_sessions_on_down = config.health.on_down == "shutdown-sessions"
        logging.getLogger().setLevel(config.log.level.upper())
        for server, state in snapshot.admin_states.items():
            self.router.set_admin_state(server, self.admin_overrides.get(server, state))

    async def _open_listeners(self, wanted: tuple[Address, ...], *,
                              inherited: dict[Address, socket.socket] | None = None, serving: bool = True) -> None:
        new = [a for a in wanted if a not in self.listeners]
        opened = await open_listeners(self.ctx, new, reuse_port=self.snapshot.workers > 1, inherited=inherited,
                                      serving=serving)
        self.listeners.update(zip(new, opened, strict=True))

    # -- operations (the admin API calls these) ------------------------------------------------

    def set_admin_state(self, server: str, state: AdminState) -> None:
        """Drain / ready / maint at run time; kept across reloads (the file's state is the default)."""
        if server not in self.snapshot.policy.servers():
            raise KeyError(server)
        self.admin_overrides[server] = state
        self.router.set_admin_state(server, state)
        log.info("server %s admin state -> %s", server, state)
        self._share("admin", server, str(state))

    def set_weight(self, server: str, weight: int) -> None:
        """Change a server's weight in every pool at run time; kept across reloads."""
        if server not in self.snapshot.policy.servers():
            raise KeyError(server)
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be 0..{MAX_WEIGHT}")
        self.weight_overrides[server] = weight
        self.router.swap_policy(self._with_weights(self.snapshot.policy))
        log.info("server %s weight -> %d", server, weight)
        self._share("weight", server, str(weight))

    def _share(self, setting: str, server: str, value: str) -> None:
        """Tell the other nodes (a shared store only); they apply it within a heartbeat."""
        if isinstance(self.store, RedisStickyStore):
            self.ctx.tasks.spawn(self.store.share(setting, server, value), name=f"share-{setting}")

    def _with_weights(self, policy: RoutingPolicy) -> RoutingPolicy:
        if not self.weight_overrides:
            return policy
        pools = tuple(
            replace(p, members=tuple(replace(m, weight=self.weight_overrides.get(m.server.name, m.weight))
                                     for m in p.members))
            for p in policy.pools
        )
        return replace(policy, pools=pools)

    async def set_sticky(self, user: str, server: str, pool: str | None = None) -> StickyEntry:
        """Point `user` at `server` (admin override, imports); durable when this returns."""
        policy = self.router.policy
        pools = [p.name for p in policy.pools if p.member(server) is not None]
        if not pools:
            raise KeyError(server)
        if pool is None:
            pool = pools[0]
        elif pool not in pools:
            raise ValueError(f"server {server} is not in pool {pool} (it is in {', '.join(pools)})")
        change = self.table.assign(user, pool, server, self.ctx.clock())
        await self.store.apply(replace(change, force=True))
        entry = self.table.get(user, self.ctx.clock())
        assert entry is not None
        return entry

    async def delete_sticky(self, user: str) -> bool:
        if not self.table.delete(user):
            return False
        await self.store.apply(Change(delete=(user,), force=True))
        return True

    async def flush_sticky(self, server: str) -> int:
        change = self.table.delete_server(server)
        await self.store.apply(replace(change, force=True))
        return len(change.delete)

    def close_sessions_of(self, server: str) -> int:
        """Cut every live session relayed to `server` (admin action, on_down = shutdown-sessions)."""
        victims = [s for s in self.ctx.sessions.values() if s.server is not None and s.server.name == server]
        for session in victims:
            session.abort(f"server {server} shut down")
        return len(victims)

    async def _cluster_heartbeat(self, store: RedisStickyStore) -> None:
        """Every second: our counts out; the other nodes' counts, the shared admin states and
        weights, and the sticky entries changed anywhere, in."""
        node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"  # this run of this node
        try:
            while True:
                view = await store.exchange(node, dict(self.router.connections), HEARTBEAT_EXPIRE_S)
                if view is not None:
                    self.router.external = Counter(view.others)
                    self._apply_shared(view)
                for key, entry in await store.pull() or ():
                    self.control.adopt(key, entry)
                await asyncio.sleep(HEARTBEAT_S)
        finally:
            await store.leave(node)

    def _apply_shared(self, view: ClusterView) -> None:
        servers = self.snapshot.policy.servers()
        for server, state in view.admin_states.items():
            if state not in ("ready", "drain", "maint"):
                continue  # not ours to understand (another version wrote it): ignored
            if server in servers and self.router.condition(server).admin != state:
                self.admin_overrides[server] = AdminState(state)
                self.router.set_admin_state(server, AdminState(state))
                log.info("server %s admin state -> %s (set through another node)", server, state)
        changed = {s: w for s, w in view.weights.items()
                   if s in servers and 0 <= w <= MAX_WEIGHT and self.weight_overrides.get(s) != w}
        if changed:
            self.weight_overrides.update(changed)
            self.router.swap_policy(self._with_weights(self.snapshot.policy))
            for server, weight in changed.items():
                log.info("server %s weight -> %d (set through another node)", server, weight)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.store.apply_later(self.table.sweep(self.ctx.clock()))


def build_store(config: Config) -> SqliteStickyStore | RedisStickyStore:
    sticky = config.sticky
    local = SqliteStickyStore(sticky.path, sync=sticky.sync)
    if sticky.store == "sqlite":
        return local
    r = sticky.redis
    sentinels = tuple((h, int(p)) for h, _, p in (s.rpartition(":") for s in r.sentinels))
    settings = RedisSettings(url=r.url, sentinels=sentinels, service_name=r.service_name,
                             key_prefix=r.key_prefix, timeout_s=r.timeout)
    return RedisStickyStore(settings, ttl_s=sticky.ttl, local=local)


class ReloadError(Exception):
    """A change that needs a restart rather than a reload."""


def _check_reloadable(old: Config, new: Config) -> None:
    if old.sticky.path != new.sticky.path:
        raise ReloadError(f"sticky.path changed ({old.sticky.path} -> {new.sticky.path}): restart to move the table")
    if old.balancer.workers != new.balancer.workers:
        raise ReloadError(f"balancer.workers changed ({old.balancer.workers} -> {new.balancer.workers}): "
                          "restart to apply it")
    if (old.sticky.store, old.sticky.redis) != (new.sticky.store, new.sticky.redis):
        raise ReloadError("sticky.store or [sticky.redis] changed: restart to apply it")
    if old.sticky.sync != new.sticky.sync:
        raise ReloadError("sticky.sync changed: restart to apply it")


def _check_admin_reloadable(old: Config, new: Config, bound_port: int | None) -> None:
    o, n = old.admin, new.admin
    # port 0 in the running file, and the port it got in the new one: the same listener
    same_listen = n.listen == o.listen or (o.listen.port == 0 and n.listen.host == o.listen.host
                                           and n.listen.port == bound_port)
    if (o.enabled, o.unix_socket) != (n.enabled, n.unix_socket) or not same_listen:
        raise ReloadError("admin.enabled, admin.listen or admin.unix_socket changed: restart to apply it "
                          "(token_file and read_auth apply on reload)")

