"""The routing model: immutable facts about the farm, and the decisions made about it.

Everything here is a frozen, slotted dataclass or an enum, so a snapshot of the farm can be
shared between the event loop, the admin API and tests without copies or locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class BalanceKind(StrEnum):
    """How a pool picks a server for a user it has never seen (or whose entry expired)."""

    LEASTCONN = "leastconn"  # open TCP connections (live load), HAProxy's weighted leastconn
    LEASTSESSIONS = "leastsessions"  # homed users: unexpired sticky entries, as the RD Connection Broker


class NoCookiePolicy(StrEnum):
    """What to do with a Connection Request that carries no `mstshash` cookie."""

    SOURCE_IP = "source-ip"  # stick on the client address
    BALANCE = "balance"  # pick a server, remember nothing
    REJECT = "reject"  # close the connection


class Reason(StrEnum):
    """Why a decision came out as it did; logged, counted and shown by the admin API."""

    STICKY_HIT = "sticky-hit"  # the user has an unexpired entry for a server of this pool
    SESSION = "session"  # a host of the pool reports a live session of the user (policy/host_sessions.py)
    NO_SESSION = "no-session"  # every host answered and none has the user's session: balanced anew
    NEW = "new"  # no usable entry: balanced, and the result will be remembered
    NO_COOKIE = "no-cookie"  # no user hint: balanced without remembering (no_cookie = "balance")
    ROUTING_TOKEN = "routing-token"  # a broker's msts token names one of our servers
    FAILOVER = "failover"  # the user's server is down past failover_after, or in maint: moved
    NO_SERVER = "no-server"  # nothing in the pool can take the user
    DENIED = "denied"  # policy refuses the connection (no_cookie = "reject", deny routes)
    LIMITED = "limited"  # a new user from a source past [limits] new_users_per_source
    FULL = "full"  # every server that could take the new user is at its max_sessions
    PER_USER = "per-user"  # the user already has [limits] per_user_connections open connections


class AdminState(StrEnum):
    """What the operator wants of a server, independent of its health."""

    READY = "ready"  # takes new users and its sticky users
    DRAIN = "drain"  # no new users; its sticky users (and routing tokens) still reach it
    MAINT = "maint"  # nobody: its sticky users are moved elsewhere


@dataclass(frozen=True, slots=True)
class ServerCondition:
    """What routing needs to know about a server right now (set by the health monitor and admin)."""

    admin: AdminState = AdminState.READY
    up: bool = True  # False only once health checks (or live traffic) proved it down
    down_since: float | None = None  # wall-clock time it went down
    # the start of its slow-start ramp (policy/slowstart.py): when it last began taking new users,
    # moved by a reload that changed the window so the ramp keeps its progress; None: no ramp
    ramp_from: float | None = None

    def down_for(self, now: float) -> float:
        return 0.0 if self.up or self.down_since is None else max(0.0, now - self.down_since)


@dataclass(frozen=True, slots=True)
class Server:
    """One session host. The name identifies it everywhere (sticky table, logs, API)."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PoolMember:
    server: Server
    weight: int  # 0 takes no new users; sticky users still reach it
    max_sessions: int | None = None  # at this load (the pool's: connections or sessions) it takes no new users
    backup: bool = False  # a hot spare: new users only while no other server of the pool can take them


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    balance: BalanceKind
    members: tuple[PoolMember, ...]

    def member(self, server_name: str) -> PoolMember | None:
        for m in self.members:
            if m.server.name == server_name:
                return m
        return None


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the balancer knows about a connection when it must decide where it goes."""

    client_host: str
    user_key: str | None  # derived from the cookie (identity.user_key), None without cookie
    msts_target: tuple[str, int] | None = None  # decoded broker routing token, if any
    collection: str | None = None  # from a tsv://MS Terminal Services Plugin.1.<Collection> token
    listener: str | None = None  # the listen address the client came in on, "host:port"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `Router.decide`. "No server" and "denied" are values, not exceptions."""

    reason: Reason
    sticky_key: str | None = None  # the key the assignment is remembered under (None: not remembered)
    pool: str | None = None
    # Servers to try, best first. One element for a sticky hit (the session lives there);
    # several for a new user, so a failed connect can fall through to the next best, and for a
    # user with sessions on several hosts (each of them).
    candidates: tuple[Server, ...] = field(default=())
    detail: str = ""  # a short human explanation, for logs and `explain`
    moved_from: str | None = None  # FAILOVER: the server the user's entry pointed at
    route: str | None = None  # the label of the route that chose the pool
    ambiguous: bool = False  # a truncated cookie whose candidate users would route differently
    # a cookie without a domain that the hosts list for several domains (`corp\alice`, `lab\alice`)
    name_ambiguous: bool = False
    # a farm policy that shaped where a new user went (a backup server, slow start), for the log
    note: str = ""

    @property
    def server(self) -> Server | None:
        return self.candidates[0] if self.candidates else None
