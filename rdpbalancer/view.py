"""`ReadModel` (ports.py) over the running components: what readers see, as values computed on
demand (copies and frozen snapshots: a reader holds no live router, table, monitor, store or poller)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rdpbalancer import clock
from rdpbalancer.config.compile import Snapshot
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.build import Groups
from rdpbalancer.directory.sync import DirectoryStatus
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.health.state import Transition
from rdpbalancer.operations import Operations
from rdpbalancer.policy.model import AdminState, RouteRequest
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.sticky import StickyEntry
from rdpbalancer.ports import (
    HA_ROLES,
    CheckState,
    HaState,
    HostSessions,
    HostState,
    Preview,
    Routing,
    ServerState,
    StickyCounts,
    StickyPage,
    StoreHealth,
)
from rdpbalancer.relay.context import RelayContext, SessionView, Stats
from rdpbalancer.relay.listener import Address, ListenerSet
from rdpbalancer.workers.primary import WorkerPool

HA_STATE_MAX_BYTES = 64  # the hook writes one word and a newline: a longer file is not its


class View:
    def __init__(self, ops: Operations, monitor: HealthMonitor, ctx: RelayContext, *, config_status: ConfigStatus,
                 listeners: ListenerSet, groups: Groups, workers: WorkerPool | None) -> None:
        self.ops, self.monitor, self.ctx = ops, monitor, ctx
        self.status, self.listeners, self.groups, self.workers = config_status, listeners, groups, workers

    @property
    def snapshot(self) -> Snapshot:
        return self.ops.snapshot

    def routing(self) -> Routing:
        router, table, now = self.ops.router, self.ops.table, clock.now()
        servers = {name: ServerState(name, router.condition(name), router.connections[name], table.homed(name),
                                     router.ramp(name, now), self._check(name))
                   for name in router.policy.servers()}
        return Routing(now, router.policy, servers, {p.name: router.on_backup(p, now) for p in router.policy.pools},
                       router.ambiguous, router.ambiguous_names)

    def _check(self, server: str) -> CheckState | None:
        tracker, spec = self.monitor.trackers.get(server), self.monitor.specs.get(server)
        if tracker is None:
            return None
        return CheckState(spec.kind if spec else None, tracker.state, tracker.since, tracker.last_check,
                          tracker.last_error, tracker.failures, tracker.last_latency_s)

    def preview(self, request: RouteRequest, trace: Trace) -> Preview:
        router = self.ops.router
        decision = router.preview(request, clock.now(), trace)
        candidates = router.candidate_users(request.user_key)
        return Preview(decision, candidates,
                       frozenset(g for u in candidates for g in router.membership.groups_of(u)))

    def sticky_page(self, server: str | None, offset: int, limit: int) -> StickyPage:
        entries = [e for e in self.ops.table if server is None or e.server == server]
        return StickyPage(len(entries), tuple(replace(e) for e in entries[offset: offset + limit]))

    def sticky_entry(self, key: str) -> StickyEntry | None:
        entry = self.ops.table.get(key, clock.now())
        return replace(entry) if entry is not None else None

    def sticky_counts(self) -> StickyCounts:
        table = self.ops.table
        return StickyCounts(len(table), table.evictions, table.expirations)

    def store_health(self) -> StoreHealth:
        store = self.ops.store
        return StoreHealth(store.shared, store.available, store.unsaved, store.commits, store.failures,
                           store.conflicts, store.last_error)

    def ha_state(self) -> HaState | None:
        path = self.snapshot.config.admin.ha_state_file
        return read_ha_state(path) if path is not None else None

    def health_events(self) -> list[Transition]:
        return list(self.monitor.history)

    def host_sessions(self) -> HostSessions:
        poller, now = self.ops.hosts, clock.now()
        directory = poller.directory
        hosts = []
        for source in poller.plan.sources:
            stats = poller.stats.get(source.server)
            hosts.append(HostState(source, directory.reports.get(source.server), directory.age(source.server, now),
                                   directory.fresh(source.server, now), directory.load(source.server),
                                   stats.failures if stats is not None else 0,
                                   stats.failing_since if stats is not None else None))
        return HostSessions(tuple(hosts), dict(directory.reports), directory.duplicates())

    @property
    def sessions(self) -> Mapping[str, SessionView]:
        return self.ctx.sessions

    @property
    def decisions(self) -> Sequence[dict[str, Any]]:
        return tuple(self.ctx.decisions)

    @property
    def config_status(self) -> ConfigStatus:
        return replace(self.status)

    @property
    def admin_overrides(self) -> Mapping[str, AdminState]:
        return dict(self.ops.admin_overrides)

    @property
    def addresses(self) -> list[Address]:
        return self.listeners.addresses

    def directory_status(self) -> DirectoryStatus:
        return self.groups.status()

    def stats(self) -> Stats:
        if self.workers is None:
            return copy.deepcopy(self.ctx.stats)
        return self.workers.merged_stats(self.ctx.stats)

    def processes(self) -> list[dict[str, Any]]:
        if self.workers is not None:
            return self.workers.describe()
        return [{"index": 0, "pid": os.getpid(), "alive": True, "role": "primary"}]

    def handshaking(self) -> int:
        local = sum(1 for s in self.ctx.sessions.values() if not s.relaying and s.worker == 0)
        return local + (self.workers.handshaking if self.workers is not None else 0)

    def tracked_sources(self) -> int:
        budget = self.ops.router.new_users
        return self.ctx.admission.sources() + (budget.sources() if budget is not None else 0)


def read_ha_state(path: Path) -> HaState:
    """The word keepalived's notify hook wrote (renamed into place: never half-written)."""
    try:
        with path.open("rb") as handle:
            data, since = handle.read(HA_STATE_MAX_BYTES + 1), os.fstat(handle.fileno()).st_mtime
    except FileNotFoundError:
        return HaState(None, None, f"{path} not written yet (keepalived's notify hook writes it)")
    except OSError as exc:
        return HaState(None, None, f"cannot read {path}: {exc.strerror or exc}")
    word = data.decode("ascii", "replace").strip().lower()
    if word not in HA_ROLES:
        return HaState(None, since, f"{path} holds {word[:HA_STATE_MAX_BYTES]!r}, not a VRRP state")
    return HaState(word, since)
