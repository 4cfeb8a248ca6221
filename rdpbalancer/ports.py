"""The running balancer as its readers and its operators see it: two small Protocols.

The admin API, the dashboard, the metrics and `explain` are written against `ReadModel` (what
they read, never change: values as of the call, not the live router, table, monitor, store or
poller) and `OperationsPort` (what an operator may do). `view.View` and `operations.Operations`
provide them; the composition root (`app.Balancer`) makes both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rdpbalancer.config.compile import Snapshot
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.sync import DirectoryStatus
from rdpbalancer.health.state import Health, Transition
from rdpbalancer.hosts.spec import HostSource
from rdpbalancer.policy.engine import RoutingPolicy
from rdpbalancer.policy.host_sessions import HostReport
from rdpbalancer.policy.model import AdminState, Decision, RouteRequest, ServerCondition
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.sticky import StickyEntry
from rdpbalancer.relay.context import SessionView, Stats

Address = tuple[str, int]


# -- what readers get: values as of the call, never the live components ------------------------------

# keepalived's VRRP states, as its notify hook writes them, and what the dashboard calls them
HA_ROLES = {"master": "active", "backup": "standby", "fault": "fault", "stop": "stopped"}


@dataclass(frozen=True, slots=True)
class HaState:
    """This node's VRRP state as keepalived's notify hook last wrote it ([admin] ha_state_file)."""

    state: str | None  # a key of HA_ROLES; None: not written yet, unreadable or not a state
    since: float | None  # when the hook wrote it (the file's mtime)
    error: str | None = None  # why the state is None

    @property
    def role(self) -> str:
        return HA_ROLES.get(self.state or "", "unknown")


@dataclass(frozen=True, slots=True)
class CheckState:
    """One server's health checks (its tracker and its check's kind)."""

    kind: str | None  # the check configured; None: not tracked
    state: Health
    since: float
    last_check: float | None
    last_error: str | None
    failures: int  # consecutive
    last_latency_s: float | None


@dataclass(frozen=True, slots=True)
class ServerState:
    name: str
    condition: ServerCondition  # admin state, up/down, since when
    connections: int  # open and opening, this node's and (cluster) the others'
    homed_users: int  # unexpired sticky entries pointing at it
    ramp: tuple[float, float] | None  # slow start: (share of its weight, seconds left) while it ramps
    check: CheckState | None


@dataclass(frozen=True, slots=True)
class Routing:
    """The router at one moment (`at`): the policy with run-time weights, and each server."""

    at: float
    policy: RoutingPolicy
    servers: Mapping[str, ServerState]
    on_backup: Mapping[str, bool]  # pool -> new users go to its backup servers
    ambiguous: int  # truncated cookies standing for users that route differently
    ambiguous_names: int  # cookies without a domain the hosts list under several domains


@dataclass(frozen=True, slots=True)
class Preview:
    """Where a request would go now (nothing changed), and whom its cookie may stand for."""

    decision: Decision
    candidates: tuple[str, ...]
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class StickyPage:
    total: int  # entries that matched
    entries: tuple[StickyEntry, ...]  # copies: the page asked for


@dataclass(frozen=True, slots=True)
class StickyCounts:
    entries: int
    evictions: int
    expirations: int


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """The sticky store's health read model."""

    shared: bool  # several nodes share it (Redis)
    available: bool | None  # the shared store answers (None: unknown yet)
    unsaved: int  # changes kept in memory because writing failed
    commits: int
    failures: int
    conflicts: int  # users another node placed first
    last_error: str | None


@dataclass(frozen=True, slots=True)
class HostState:
    """A server with a session source: what it said last, how old that is, how its queries go."""

    source: HostSource
    report: HostReport | None
    age_s: float | None
    fresh: bool
    load: int  # its listed sessions plus the users placed there since it answered
    failures: int
    failing_since: float | None


@dataclass(frozen=True, slots=True)
class HostSessions:
    """The session directory at one moment."""

    hosts: tuple[HostState, ...]
    reports: Mapping[str, HostReport]  # server -> what it said last (sources gone included, until forgotten)
    duplicates: Mapping[str, tuple[str, ...]]  # user -> the hosts listing a session of hers


class ReadModel(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...

    def routing(self) -> Routing: ...

    def preview(self, request: RouteRequest, trace: Trace) -> Preview:
        """`explain`: the router's preview, never its decide."""
        ...

    def sticky_page(self, server: str | None, offset: int, limit: int) -> StickyPage:
        """The table's entries (all, or those of `server`), `limit` of them from `offset`."""
        ...

    def sticky_entry(self, key: str) -> StickyEntry | None: ...

    def sticky_counts(self) -> StickyCounts: ...

    def store_health(self) -> StoreHealth: ...

    def ha_state(self) -> HaState | None:
        """The node's VRRP state; None without [admin] ha_state_file."""
        ...

    def health_events(self) -> list[Transition]:
        """The servers' latest health state changes, oldest first."""
        ...

    def host_sessions(self) -> HostSessions:
        """The session directory: every host's sessions, their sources and their health."""
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
