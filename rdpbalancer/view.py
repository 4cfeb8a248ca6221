"""`ReadModel` (ports.py) over the running components: what readers see, computed on demand."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rdpbalancer.config.compile import Snapshot
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.build import Groups
from rdpbalancer.directory.sync import DirectoryStatus
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.operations import Operations
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.model import AdminState
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.relay.context import RelayContext, SessionView, Stats
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.listener import Address, ListenerSet
from rdpbalancer.store.port import StickyStorePort
from rdpbalancer.workers.primary import WorkerPool


class View:
    def __init__(self, ops: Operations, monitor: HealthMonitor, ctx: RelayContext, control: LocalControl, *,
                 config_status: ConfigStatus, listeners: ListenerSet, groups: Groups,
                 workers: WorkerPool | None) -> None:
        self.ops, self.monitor, self.ctx, self.control = ops, monitor, ctx, control
        self.config_status, self.listeners, self.groups, self.workers = config_status, listeners, groups, workers

    @property
    def snapshot(self) -> Snapshot:
        return self.ops.snapshot

    @property
    def router(self) -> Router:
        return self.ops.router

    @property
    def table(self) -> StickyTable:
        return self.ops.table

    @property
    def store(self) -> StickyStorePort:
        return self.ops.store

    @property
    def sessions(self) -> Mapping[str, SessionView]:
        return self.ctx.sessions

    @property
    def decisions(self) -> Sequence[dict[str, Any]]:
        return self.ctx.decisions

    @property
    def admin_overrides(self) -> Mapping[str, AdminState]:
        return self.ops.admin_overrides

    @property
    def addresses(self) -> list[Address]:
        return self.listeners.addresses

    def directory_status(self) -> DirectoryStatus:
        return self.groups.status()

    def stats(self) -> Stats:
        if self.workers is None:
            return self.ctx.stats
        return self.workers.merged_stats(self.ctx.stats)

    def processes(self) -> list[dict[str, Any]]:
        if self.workers is not None:
            return self.workers.describe()
        return [{"index": 0, "pid": os.getpid(), "alive": True, "role": "primary"}]

    def handshaking(self) -> int:
        local = sum(1 for s in self.ctx.sessions.values() if not s.relaying and s.worker == 0)
        return local + (self.workers.handshaking if self.workers is not None else 0)

    def tracked_sources(self) -> int:
        budget = self.router.new_users
        return self.ctx.admission.sources() + (budget.sources() if budget is not None else 0)

    @property
    def hosts(self) -> SessionPoller:
        return self.ops.hosts
