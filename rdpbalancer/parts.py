"""The running balancer's components, as the composition root (app.py) made them: what a reload
reconfigures (reloader.py), what a handoff pauses, resumes and hands over (handoff/host.py), what
runs in the background (background.py)."""

from __future__ import annotations

from dataclasses import dataclass

from rdpbalancer.admin.server import AdminServer
from rdpbalancer.config.compile import Snapshot
from rdpbalancer.directory.build import Groups
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.operations import Operations
from rdpbalancer.policy.engine import Router
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.listener import ListenerSet
from rdpbalancer.store.port import StickyStorePort
from rdpbalancer.workers.primary import WorkerPool


@dataclass(frozen=True, slots=True)
class Parts:
    router: Router  # its table is the sticky table
    store: StickyStorePort
    monitor: HealthMonitor
    control: LocalControl
    hosts: SessionPoller
    ctx: RelayContext
    listeners: ListenerSet
    ops: Operations
    groups: Groups  # the group directory (a reload may replace it)
    admin: AdminServer
    workers: WorkerPool | None  # worker processes ([balancer] workers > 1), started after the listeners

    @property
    def snapshot(self) -> Snapshot:
        """The configuration in force (a reload swaps it)."""
        return self.ops.snapshot
