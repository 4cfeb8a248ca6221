"""The running balancer as its readers and its operators see it: two small Protocols.

The admin API, the dashboard, the metrics and `explain` are written against `ReadModel` (what
they read, never change) and `OperationsPort` (what an operator may do). The composition root
(`app.Balancer`) provides both; nothing but the entry points imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rdpbalancer.config.compile import Snapshot
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.sync import DirectoryStatus
from rdpbalancer.health.monitor import HealthMonitor
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.model import AdminState
from rdpbalancer.policy.sessions import HostReport
from rdpbalancer.policy.sticky import StickyEntry, StickyTable
from rdpbalancer.relay.context import SessionView, Stats
from rdpbalancer.store.port import StickyStorePort

Address = tuple[str, int]


class ReadModel(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def router(self) -> Router:
        """The live router: conditions, connections, policy with run-time weights (read only:
        `preview`, never `decide`)."""
        ...

    @property
    def table(self) -> StickyTable: ...

    @property
    def monitor(self) -> HealthMonitor: ...

    @property
    def store(self) -> StickyStorePort:
        """For its health read model (unsaved, failures, available, last_error)."""
        ...

    @property
    def sessions(self) -> Mapping[str, SessionView]:
        """Every connection of this process and its workers' relaying ones, by id."""
        ...

    @property
    def decisions(self) -> Sequence[dict[str, Any]]:
        """The latest routing outcomes, oldest first."""
        ...

    @property
    def admin_overrides(self) -> Mapping[str, AdminState]: ...

    @property
    def config_status(self) -> ConfigStatus: ...

    @property
    def addresses(self) -> list[Address]:
        """The bound listen addresses (port 0 resolved); empty while not accepting."""
        ...

    def directory_status(self) -> DirectoryStatus: ...

    def stats(self) -> Stats:
        """Counters of every process (the workers' as of their last report)."""
        ...

    def processes(self) -> list[dict[str, Any]]:
        """The primary and its workers (the admin API's /api/v1/workers)."""
        ...

    def handshaking(self) -> int:
        """Connections, in every process, that have not sent their Connection Request yet."""
        ...

    def tracked_sources(self) -> int:
        """Client addresses the limits hold state for."""
        ...

    @property
    def hosts(self) -> SessionPoller:
        """The session directory: every host's sessions, their sources and their health."""
        ...


class OperationsPort(Protocol):
    def set_admin_state(self, server: str, state: AdminState, *, shared: bool = True) -> None: ...

    def set_weight(self, server: str, weight: int, *, shared: bool = True) -> None: ...

    def close_session(self, session_id: str) -> bool: ...

    async def set_sticky(self, user: str, server: str, pool: str | None = None) -> StickyEntry: ...

    async def delete_sticky(self, user: str) -> bool: ...

    async def flush_sticky(self, server: str) -> int: ...

    async def reload(self) -> str | None:
        """None on success, else the error (the running configuration stays)."""
        ...

    def start_handoff(self) -> bool:
        """Start a graceful restart in the background; False when one already started."""
        ...

    def push_sessions(self, report: HostReport) -> None:
        """A host pushed its session list (its token was checked by the caller)."""
        ...
