"""Compile a validated `Config` into the immutable objects the running balancer uses.

Reload builds a complete new set of these beside the old ones and swaps references; nothing
here mutates running state.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from rdpbalancer.config.routing import RouteConfig
from rdpbalancer.config.schema import Config, PoolConfig, ServerConfig
from rdpbalancer.config.sessions import WINDOWS_SMB_PORT, merge
from rdpbalancer.health.state import CheckSpec
from rdpbalancer.hosts.spec import HostSource, SessionsPlan, credentials_from_env, read_credentials, read_push_tokens
from rdpbalancer.netaddr import format_addr
from rdpbalancer.policy.engine import RoutingPolicy
from rdpbalancer.policy.host_sessions import SessionRules, Trust
from rdpbalancer.policy.identity import user_key
from rdpbalancer.policy.limits import LimitSettings
from rdpbalancer.policy.model import AdminState, BalanceKind, NoCookiePolicy, Pool, PoolMember, Server
from rdpbalancer.policy.rules import Route, TimeRule
from rdpbalancer.settings import RelaySettings

FDS_PER_CONNECTION = 4  # client and server sockets, plus a splice pipe pair while bytes are in flight
RESERVED_FDS = 256  # listeners, the sticky store, health probes, the admin API, logs, LDAP
DEFAULT_MAX_CONNECTIONS = 10_000  # [limits] max_connections when the open-file limit allows it
SPLICE_AVAILABLE = hasattr(os, "splice")  # Linux, Python 3.10+: relay/splice.py


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    policy: RoutingPolicy
    relay: RelaySettings
    listen: tuple[tuple[str, int], ...]
    checks: tuple[CheckSpec, ...]
    admin_states: dict[str, AdminState]
    workers: int = 1  # processes relaying connections ("auto" resolved to the usable cores)
    sessions: SessionsPlan = field(default_factory=SessionsPlan)  # the session directory's sources


def compile_config(config: Config) -> Snapshot:
    servers: dict[str, Server] = {}
    pools = []
    for pool in config.pools:
        members = []
        for sc in pool.servers:
            server = servers.setdefault(sc.name, Server(sc.name, sc.address.host, sc.address.port))
            members.append(PoolMember(server, sc.weight, sc.max_sessions, sc.backup))
        pools.append(Pool(pool.name, BalanceKind(pool.balance), tuple(members)))
    b = config.balancer
    sessions = sessions_plan(config, servers)
    policy = RoutingPolicy(
        pools=tuple(pools),
        no_cookie=NoCookiePolicy(b.no_cookie),
        max_connect_attempts=b.max_connect_attempts,
        failover_after_s=config.health.failover_after,
        routes=tuple(_route(i, r, config.identity.strip_domain) for i, r in enumerate(config.routes)),
        truncated_length=config.identity.truncated_length,
        session_rules=sessions.rules,
        slowstart=slowstart_windows(config),
        per_user_connections=config.limits.per_user_connections,
        shared_table=config.sticky.store == "redis",
    )
    workers = usable_cores() if b.workers == "auto" else b.workers
    relay = RelaySettings(
        handshake_timeout_s=b.handshake_timeout,
        connect_timeout_s=b.connect_timeout,
        strip_domain=config.identity.strip_domain,
        splice=b.relay in ("auto", "splice") and SPLICE_AVAILABLE,
        limits=_per_process(config, workers, open_file_limit()),
        proxy_listeners=frozenset(format_addr(a.host, a.port) for a in b.listen if a.proxy_protocol),
        trusted_proxies=b.trusted_proxies,
        processes=workers,
        transparent=transparent_servers(config),
    )
    listen = tuple((a.host, a.port) for a in b.listen)
    return Snapshot(config, policy, relay, listen, _check_specs(config, servers), _admin_states(config), workers,
                    sessions)


T = TypeVar("T")


def transparent_servers(config: Config) -> frozenset[str]:
    """The servers connected to from the client's address (rdpbalancer/transparent.py)."""
    mode = per_server(config, lambda sc: sc.transparent, lambda pool: pool.transparent)
    return frozenset(name for name, on in mode.items() if on)


def slowstart_windows(config: Config) -> dict[str, float]:
    """Each server's slow-start window, else [balancer]'s. A ramp is the host's, as its health
    is, so one window per server. Servers without a ramp are left out."""
    default = config.balancer.slowstart
    windows = per_server(config, lambda sc: sc.slowstart,
                         lambda pool: pool.slowstart if pool.slowstart is not None else default)
    return {name: w for name, w in windows.items() if w > 0}


def per_server(config: Config, own: Callable[[ServerConfig], T | None],
                  pooled: Callable[[PoolConfig], T]) -> dict[str, T]:
    """A per-server setting: the server's own (the first place it is listed with one), else the
    first pool's that lists it (a server may be in several pools; it is one host)."""
    owns: dict[str, T] = {}
    pools: dict[str, T] = {}
    for pool in config.pools:
        for sc in pool.servers:
            value = own(sc)
            if value is not None:
                owns.setdefault(sc.name, value)
            pools.setdefault(sc.name, pooled(pool))
    return pools | owns


def sessions_plan(config: Config, servers: dict[str, Server]) -> SessionsPlan:
    """Each server's session source (the first pool that names it decides, as for health checks),
    each pool's directory rules. The secret files are read here, so a reload re-reads them."""
    section = config.sessions
    credentials = read_credentials(section.credentials) if section.credentials is not None else credentials_from_env()
    sources: dict[str, HostSource] = {}
    rules: dict[str, SessionRules] = {}
    for pool in config.pools:
        merged_pool = merge(section, pool.sessions)
        uses = False
        for sc in pool.servers:
            merged = merge(section, pool.sessions, sc.sessions)
            if merged.source == "none":
                continue
            uses = True
            if sc.name in sources:
                continue
            server = servers[sc.name]
            default_port = WINDOWS_SMB_PORT if merged.source == "windows" else None
            sources[sc.name] = HostSource(
                server=sc.name, host=server.host, kind=merged.source, interval_s=merged.interval,
                timeout_s=merged.timeout, stale_after_s=merged.stale_after, port=merged.port or default_port,
                command=merged.command,
                credentials=credentials if merged.source == "windows" else None)
        if uses:
            rules[pool.name] = SessionRules(Trust(merged_pool.trust), merged_pool.logon_grace)
    tokens = read_push_tokens(section.push_tokens, set(servers)) if section.push_tokens is not None else {}
    return SessionsPlan(tuple(sources.values()), rules, tokens, section.max_parallel)


def _per_process(config: Config, processes: int, fd_limit: int | None) -> LimitSettings:
    """Each process enforces its share of the accept-time limits (the kernel spreads connections
    evenly over SO_REUSEPORT sockets); the new-user budget is the primary's alone, so it is whole."""
    lim = config.limits

    def share(value: int) -> int:
        return max(1, math.ceil(value / processes))

    total = lim.max_connections or derived_max_connections(fd_limit, processes)
    return LimitSettings(
        max_connections=share(total), max_handshakes=share(lim.max_handshakes),
        per_source_connections=share(lim.per_source_connections), per_source_rate=lim.per_source_rate / processes,
        per_source_burst=share(lim.per_source_burst), new_users_per_source=lim.new_users_per_source,
    )


def open_file_limit() -> int | None:
    """This process's soft RLIMIT_NOFILE (the CLI raises it to the hard limit first); None: unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def derived_max_connections(fd_limit: int | None, processes: int = 1) -> int:
    """`[limits] max_connections` left out: what the open-file limit of each process can hold,
    up to DEFAULT_MAX_CONNECTIONS, so a default never promises connections the process cannot open."""
    if fd_limit is None:
        return DEFAULT_MAX_CONNECTIONS
    per_process = max(1, (fd_limit - RESERVED_FDS) // FDS_PER_CONNECTION)
    return min(DEFAULT_MAX_CONNECTIONS, per_process * processes)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_specs(config: Config, servers: dict[str, Server]) -> tuple[CheckSpec, ...]:
    """One check per server (a host is checked once, whatever the number of its pools).

    Precedence: the server's own `check`, then the first pool it appears in (`health = {...}`),
    then [health].
    """
    g = config.health
    specs: dict[str, CheckSpec] = {}
    for pool in config.pools:
        o = pool.health
        for sc in pool.servers:
            if sc.name in specs:
                continue
            specs[sc.name] = CheckSpec(
                server=servers[sc.name],
                kind=sc.check or o.check or g.check,
                interval_s=o.interval or g.interval,
                timeout_s=o.timeout or g.timeout,
                rise=o.rise or g.rise,
                fall=o.fall or g.fall,
            )
    return tuple(specs.values())


def _admin_states(config: Config) -> dict[str, AdminState]:
    """A server's state from the configuration: the most restrictive of its pool entries."""
    order = [AdminState.READY, AdminState.DRAIN, AdminState.MAINT]
    states: dict[str, AdminState] = {}
    for pool in config.pools:
        for sc in pool.servers:
            state = AdminState(sc.state)
            states[sc.name] = max(states.get(sc.name, AdminState.READY), state, key=order.index)
    return states


def _route(index: int, rc: RouteConfig, strip_domain: bool) -> Route:
    users = None
    if rc.users is not None:
        users = frozenset(k for u in rc.users if (k := user_key(u.encode(), strip_domain=strip_domain)))
    time = None
    if rc.time is not None:
        start, end = rc.time.hours
        time = TimeRule(frozenset(rc.time.days), start, end, rc.time.timezone)
    return Route(
        label=f"route[{index}]" + (f" ({rc.name})" if rc.name else ""),
        pool=rc.pool,
        deny=rc.deny,
        users=users,
        groups=rc.groups,
        sources=rc.sources,
        time=time,
        collection=rc.collection,
        listener=str(rc.listener) if rc.listener is not None else None,
    )
