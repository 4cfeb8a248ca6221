"""Operator actions on a running balancer: server state and weight, the sticky table, sessions.

One object owns what an operator changes at run time (drain/maint and weight overrides, which
survive reloads; the configuration file's values are the defaults) and applies a configuration
snapshot on top of them. The admin API, the health monitor (`on_down = "shutdown-sessions"`),
the cluster sync and a handoff all act through it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from rdpbalancer.config.compile import Snapshot
from rdpbalancer.config.durations import format_duration
from rdpbalancer.config.types import MAX_WEIGHT
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.host_sessions import HostReport
from rdpbalancer.policy.model import AdminState
from rdpbalancer.policy.sticky import Change, StickyEntry
from rdpbalancer.relay.context import RelayContext, SessionView
from rdpbalancer.store.port import StickyStorePort

log = logging.getLogger("rdpbalancer")

Share = Callable[[str, str, str], None]  # (setting, server, value): tell the other nodes


def _no_cluster(_setting: str, _server: str, _value: str) -> None:
    pass


async def _no_reload() -> str | None:
    return "reload is not available here"


def _no_handoff() -> bool:
    return False


class Operations:
    def __init__(self, router: Router, store: StickyStorePort, ctx: RelayContext, snapshot: Snapshot,
                 hosts: SessionPoller, *, share: Share = _no_cluster) -> None:
        self.router, self.table, self.store, self.ctx, self.hosts = router, router.table, store, ctx, hosts
        self.snapshot = snapshot
        self.admin_overrides: dict[str, AdminState] = {}  # set at run time; survive reloads
        self.weight_overrides: dict[str, int] = {}
        self.share = share  # tell the other nodes (cluster.sharing)
        # the whole process's actions, wired by the composition root (reloader.py, handoff/)
        self.on_reload: Callable[[], Awaitable[str | None]] = _no_reload
        self.on_handoff: Callable[[], bool] = _no_handoff

    async def reload(self) -> str | None:
        """Re-read the configuration file; None on success, else the error."""
        return await self.on_reload()

    def push_sessions(self, report: HostReport) -> None:
        """A host's own session list (source = "push"; its token was checked by the API)."""
        self.hosts.accept(report.server, report)

    def start_handoff(self) -> bool:
        """A graceful restart in the background; False when one already started."""
        return self.on_handoff()

    # -- configuration ----------------------------------------------------------------------------

    def configure(self, snapshot: Snapshot) -> None:
        """A configuration (at start, and each reload) under the run-time overrides. A server
        gone from it loses its entries, overrides and health; its live sessions go on."""
        gone = set(self.snapshot.policy.servers()) - set(snapshot.policy.servers())
        self.snapshot = snapshot
        for name in gone:
            self.store.apply_later(self.table.delete_server(name))
            self.admin_overrides.pop(name, None)
            self.weight_overrides.pop(name, None)
            self.router.conditions.pop(name, None)
            log.info("server %s removed: its sticky entries are dropped, its live sessions go on", name)
        now = self.ctx.clock()
        ramping = {name for name in self.router.policy.slowstart if self.router.ramp(name, now) is not None}
        self.router.swap_policy(self._with_weights(snapshot.policy), now)
        for server, state in snapshot.admin_states.items():
            self.router.set_admin_state(server, self.admin_overrides.get(server, state), now)
        for name in self.router.policy.slowstart:
            if name not in ramping:
                self._log_ramp(name, now)

    def _log_ramp(self, server: str, now: float) -> None:
        """Say so when `server` has just begun a slow-start ramp."""
        if self.router.ramp(server, now) is not None:
            log.info("server %s takes new users gradually: slow start over %s", server,
                     format_duration(self.router.policy.slowstart[server]))

    def adopt(self, admin_overrides: dict[str, AdminState], weight_overrides: dict[str, int]) -> None:
        """The overrides of the process this one took over from (a handoff)."""
        servers = self.snapshot.policy.servers()
        self.admin_overrides = {k: v for k, v in admin_overrides.items() if k in servers}
        self.weight_overrides = {k: v for k, v in weight_overrides.items() if k in servers}
        self.configure(self.snapshot)

    # -- servers ------------------------------------------------------------------------------------

    def set_admin_state(self, server: str, state: AdminState, *, shared: bool = True) -> None:
        """Drain / ready / maint at run time; kept across reloads (the file's state is the default)."""
        if server not in self.snapshot.policy.servers():
            raise KeyError(server)
        self.admin_overrides[server] = state
        if self.router.set_admin_state(server, state, self.ctx.clock()):
            self._log_ramp(server, self.ctx.clock())
        log.info("server %s admin state -> %s%s", server, state, "" if shared else " (set through another node)")
        if shared:
            self.share("admin", server, str(state))

    def set_weight(self, server: str, weight: int, *, shared: bool = True) -> None:
        """Change a server's weight in every pool at run time; kept across reloads."""
        if server not in self.snapshot.policy.servers():
            raise KeyError(server)
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be 0..{MAX_WEIGHT}")
        self.weight_overrides[server] = weight
        now = self.ctx.clock()
        ramping = self.router.ramp(server, now) is not None
        self.router.swap_policy(self._with_weights(self.snapshot.policy), now)
        if not ramping:
            self._log_ramp(server, now)
        log.info("server %s weight -> %d%s", server, weight, "" if shared else " (set through another node)")
        if shared:
            self.share("weight", server, str(weight))

    def _with_weights(self, policy: RoutingPolicy) -> RoutingPolicy:
        if not self.weight_overrides:
            return policy
        pools = tuple(
            replace(p, members=tuple(replace(m, weight=self.weight_overrides.get(m.server.name, m.weight))
                                     for m in p.members))
            for p in policy.pools
        )
        return replace(policy, pools=pools)

    def close_sessions_of(self, server: str) -> int:
        """Cut every live session relayed to `server` (admin action, on_down = shutdown-sessions)."""
        return close_sessions_of(self.ctx.sessions, server)

    def close_session(self, session_id: str) -> bool:
        session = self.ctx.sessions.get(session_id)
        if session is None:
            return False
        session.abort("closed by admin")
        return True

    # -- the sticky table --------------------------------------------------------------------------

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


def close_sessions_of(sessions: Mapping[str, SessionView], server: str) -> int:
    """Cut every live session relayed to `server`; how many. The health monitor gets it with the
    sessions bound (it is made before the relay context and this module's Operations)."""
    victims = [s for s in sessions.values() if s.server is not None and s.server.name == server]
    for session in victims:
        session.abort(f"server {server} shut down")
    return len(victims)
