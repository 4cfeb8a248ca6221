"""The pydantic schema of the TOML configuration file.

The models mirror the file one to one: a section is a model, a key is a field, unknown keys
are errors (``extra="forbid"``). Values arrive already parsed: durations as float seconds,
addresses as :class:`ListenAddress` / :class:`BackendAddress`, the sticky path as an
absolute :class:`~pathlib.Path`.

To add a section: write one ``ConfigModel`` subclass and add one field to :class:`Config`.

Validators read two things from the pydantic validation context, supplied by the loader:
``source_path`` (the file) and ``base_dir`` (where relative paths start).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rdpbalancer.config.addresses import BackendAddress, ListenAddress
from rdpbalancer.config.admin import AdminSection
from rdpbalancer.config.base import ConfigModel
from rdpbalancer.config.directory import DirectorySection
from rdpbalancer.config.health import CheckKind, HealthOverride, HealthSection
from rdpbalancer.config.routing import GroupConfig, Network, RouteConfig
from rdpbalancer.config.sessions import (
    POLLED,
    ServerSessionsOverride,
    SessionsOverride,
    SessionsSection,
    check_merged,
    merge,
)
from rdpbalancer.config.types import (
    DEFAULT_COMMIT_WINDOW_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HANDSHAKE_TIMEOUT_S,
    DEFAULT_RDP_PORT,
    DEFAULT_STICKY_PATH,
    DEFAULT_STICKY_TTL_S,
    MAX_HANDSHAKE_TIMEOUT_S,
    MAX_WEIGHT,
    BackendAddressField,
    CommitWindow,
    ConfigPath,
    DurationOrOff,
    ListenerField,
    Loc,
    Name,
    PositiveDuration,
    _duration_validator,
    _raise_issues,
)
from rdpbalancer.hosts.spec import admin_token_clash, credentials_from_env, read_credentials, read_push_tokens

# --- sections ------------------------------------------------------------------------------


MAX_WORKERS = 64


class BalancerSection(ConfigModel):
    """``[balancer]``: where to listen and how to treat new connections."""

    listen: tuple[ListenerField, ...] = (ListenAddress("0.0.0.0", DEFAULT_RDP_PORT),)
    handshake_timeout: Annotated[
        float, BeforeValidator(_duration_validator(at_most_s=MAX_HANDSHAKE_TIMEOUT_S))
    ] = DEFAULT_HANDSHAKE_TIMEOUT_S
    connect_timeout: PositiveDuration = DEFAULT_CONNECT_TIMEOUT_S
    no_cookie: Literal["source-ip", "balance", "reject"] = "source-ip"
    max_connect_attempts: StrictInt = Field(default=3, ge=1)
    # "splice": zero-copy os.splice relay (Linux); "copy": asyncio Protocol relay (any OS).
    # "auto" is splice where the kernel has it, else copy.
    relay: Literal["auto", "splice", "copy"] = "auto"
    # Processes relaying connections (SO_REUSEPORT on every listener); "auto" = usable cores.
    # Routing, health checks and the sticky table stay in the first one (see README "Workers").
    workers: Literal["auto"] | Annotated[StrictInt, Field(ge=1, le=MAX_WORKERS)] = 1
    # After a handoff (graceful restart), the old process relays its sessions until they end;
    # with this set, it cuts what is left after that long. Default: no limit.
    drain_timeout: PositiveDuration | None = None
    # Proxies allowed to send a PROXY protocol header on listeners with proxy_protocol = true.
    trusted_proxies: tuple[Network, ...] = ()
    # A server that begins to take new users (up again, out of drain/maint, added by a reload)
    # gets them gradually: its weight ramps from 5 % to 100 % over this window. "0s": off.
    # A pool's or a server's own slowstart overrides it.
    slowstart: DurationOrOff = 0.0

    @field_validator("listen")
    @classmethod
    def _listen_once_each(cls, listen: tuple[ListenAddress, ...]) -> tuple[ListenAddress, ...]:
        if not listen:
            raise ValueError("at least one address is required")
        seen: set[ListenAddress] = set()
        issues: list[tuple[Loc, str]] = []
        for index, address in enumerate(listen):
            if address in seen:
                issues.append(((index,), f"duplicate listen address {address}"))
            seen.add(address)
        _raise_issues(issues)
        return listen

    @model_validator(mode="after")
    def _proxies_named(self) -> Self:
        proxied = [str(a) for a in self.listen if a.proxy_protocol]
        if proxied and not self.trusted_proxies:
            raise ValueError(f"listener(s) {', '.join(proxied)} expect PROXY protocol headers: list the proxies "
                             'allowed to send them in [balancer] trusted_proxies, e.g. ["10.0.0.5/32"]')
        return self


class LimitsSection(ConfigModel):
    """``[limits]``: what one client address, and everyone together, may take. The defaults let
    an office of hundreds behind one NAT address log on at 9:00; each limit that acts is logged
    and counted in rdpbalancer_connections_refused_total{reason}."""

    # open client connections, in all; None: as many as the open-file limit allows, up to 10,000
    max_connections: StrictInt | None = Field(default=None, ge=1)
    max_handshakes: StrictInt = Field(default=1_000, ge=1)  # connections still before their request
    per_source_connections: StrictInt = Field(default=500, ge=1)  # open, per client address (IPv6: /64)
    per_source_rate: float = Field(default=50.0, gt=0)  # new connections per second per address ...
    per_source_burst: StrictInt = Field(default=200, ge=1)  # ... after a burst of this many
    new_users_per_source: StrictInt = Field(default=300, ge=1)  # new sticky users per address per minute
    # open connections per user (cookie) key, counted across workers; None: no limit. Off by
    # default: kiosks and shared service accounts log on many times under one name.
    per_user_connections: StrictInt | None = Field(default=None, ge=1)


class IdentitySection(ConfigModel):
    """``[identity]``: how the user name from the mstshash cookie is normalised."""

    strip_domain: StrictBool = True
    # mstsc may send only the first N characters of the login name; a cookie of exactly this
    # length matches every directory user whose name starts with it. 0 = off.
    truncated_length: StrictInt = Field(default=0, ge=0, le=255)


class RedisSection(ConfigModel):
    """``[sticky.redis]``: the shared table of several balancer nodes (``store = "redis"``)."""

    url: str = "redis://127.0.0.1:6379/0"
    # Redis Sentinel instead of `url`: "host:port" of each sentinel, and the monitored service
    sentinels: tuple[str, ...] = ()
    service_name: str = "mymaster"
    key_prefix: str = "rdpb:"
    timeout: PositiveDuration = 0.5  # a slower answer counts as Redis being away

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://host:port/db, rediss://... or unix:///path, not {url!r}")
        return url

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addresses(cls, sentinels: tuple[str, ...]) -> tuple[str, ...]:
        for item in sentinels:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, not {item!r}")
        return sentinels


class StickySection(ConfigModel):
    """``[sticky]``: the table that sends a returning user back to the same server."""

    # "sqlite": this node's file. "redis": shared by several nodes ([sticky.redis]), with the
    # file at `path` as this node's own copy for Redis outages.
    store: Literal["sqlite", "redis"] = "sqlite"
    redis: RedisSection = RedisSection()
    path: ConfigPath = Path(DEFAULT_STICKY_PATH)
    ttl: PositiveDuration = DEFAULT_STICKY_TTL_S
    max_entries: StrictInt = Field(default=100_000, ge=1)
    sync: Literal["full", "normal"] = "full"
    # group commit: while new users arrive back to back, their writes wait up to this long to
    # share one transaction (one sync); a write after a quiet moment goes at once
    commit_window: CommitWindow = DEFAULT_COMMIT_WINDOW_S


class LogSection(ConfigModel):
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class ServerConfig(ConfigModel):
    """One RDP server of a pool: ``{ name = "TS01", address = "172.16.50.11:3389", weight = 10 }``."""

    name: Name
    address: BackendAddressField
    weight: StrictInt = Field(default=1, ge=0, le=MAX_WEIGHT)  # 0: keeps its users, takes no new ones
    # at this load it takes no new users (connections for leastconn, sessions for leastsessions);
    # its own users still reach it
    max_sessions: StrictInt | None = Field(default=None, ge=1)
    # a hot spare: takes new users only while no other server of the pool can take them
    backup: StrictBool = False
    slowstart: DurationOrOff | None = None  # overrides the pool's and [balancer]'s slowstart
    state: Literal["ready", "drain", "maint"] = "ready"
    check: CheckKind | None = None  # overrides the pool's and [health]'s check for this server
    sessions: ServerSessionsOverride = ServerSessionsOverride()  # overrides the pool's and [sessions]' source
    # connect to this server from the client's address (rdpbalancer/transparent.py); overrides the pool's
    transparent: StrictBool | None = None


class PoolConfig(ConfigModel):
    """``[[pool]]``: a named set of servers and the algorithm that balances between them."""

    name: Name
    balance: Literal["leastconn", "leastsessions"] = "leastconn"
    servers: tuple[ServerConfig, ...]
    slowstart: DurationOrOff | None = None  # overrides [balancer] slowstart for this pool's servers
    health: HealthOverride = HealthOverride()
    sessions: SessionsOverride = SessionsOverride()
    # the servers see the client's address, not the balancer's (needs CAP_NET_ADMIN and the
    # routing of README "Transparent mode"); health checks keep the balancer's own address
    transparent: StrictBool = False

    @field_validator("servers")
    @classmethod
    def _servers_not_empty(cls, servers: tuple[ServerConfig, ...]) -> tuple[ServerConfig, ...]:
        if not servers:
            raise ValueError("a pool needs at least one server")
        return servers

    @model_validator(mode="after")
    def _servers_once_each(self) -> Self:
        issues: list[tuple[Loc, str]] = []
        for key in ("name", "address"):
            first_index: dict[object, int] = {}
            for index, server in enumerate(self.servers):
                value = getattr(server, key)
                if value in first_index:
                    earlier = f"servers[{first_index[value]}]"
                    message = f"duplicate server {key} {str(value)!r}, already used by {earlier} in this pool"
                    issues.append((("servers", index, key), message))
                first_index.setdefault(value, index)
        _raise_issues(issues)
        return self


# --- root ----------------------------------------------------------------------------------


class Config(ConfigModel):
    """The whole configuration file. ``source_path`` is the absolute path it was read from."""

    balancer: BalancerSection = BalancerSection()
    identity: IdentitySection = IdentitySection()
    limits: LimitsSection = LimitsSection()
    sticky: StickySection = StickySection()
    log: LogSection = LogSection()
    health: HealthSection = HealthSection()
    pools: tuple[PoolConfig, ...] = Field(alias="pool")
    routes: tuple[RouteConfig, ...] = Field(default=(), alias="route")
    groups: dict[Name, GroupConfig] = {}
    directory: DirectorySection = DirectorySection()
    admin: AdminSection = AdminSection()
    sessions: SessionsSection = SessionsSection()

    _source_path: str = PrivateAttr(default="<unknown>")

    @property
    def source_path(self) -> str:
        return self._source_path

    @model_validator(mode="before")
    @classmethod
    def _no_pool_is_empty_pools(cls, data: object) -> object:
        """A file without [[pool]] gets the same message as an empty one, located at "pool"."""
        if isinstance(data, dict) and "pool" not in data:
            return {**data, "pool": ()}
        return data

    @field_validator("pools")
    @classmethod
    def _at_least_one_pool(cls, pools: tuple[PoolConfig, ...]) -> tuple[PoolConfig, ...]:
        if not pools:
            raise ValueError("at least one [[pool]] section is required")
        return pools

    @model_validator(mode="after")
    def _check_whole(self, info: ValidationInfo) -> Self:
        self._source_path = str((info.context or {}).get("source_path", "<unknown>"))
        _raise_issues([
            *_duplicate_pool_names(self.pools),
            *_inconsistent_servers(self.pools),
            *_route_issues(self),
            *_group_issues(self),
            *_session_issues(self),
        ])
        return self


def _duplicate_pool_names(pools: tuple[PoolConfig, ...]) -> Iterator[tuple[Loc, str]]:
    first_index: dict[str, int] = {}
    for index, pool in enumerate(pools):
        if pool.name in first_index:
            message = f"duplicate pool name {pool.name!r}, already used by pool[{first_index[pool.name]}]"
            yield ("pool", index, "name"), message
        first_index.setdefault(pool.name, index)


def _inconsistent_servers(pools: tuple[PoolConfig, ...]) -> Iterator[tuple[Loc, str]]:
    """A server name identifies one host, in every pool, and a host has one name.

    Weights may differ from pool to pool; duplicates inside a pool are PoolConfig's concern.
    """
    first_by_name: dict[str, tuple[str, BackendAddress]] = {}
    first_by_address: dict[BackendAddress, tuple[str, str]] = {}
    for pool_index, pool in enumerate(pools):
        for index, server in enumerate(pool.servers):
            here = f"pool[{pool_index}].servers[{index}]"
            where, address = first_by_name.setdefault(server.name, (here, server.address))
            if address != server.address:
                message = f"server {server.name!r} is {server.address} here but {address} in {where}"
                yield ("pool", pool_index, "servers", index, "address"), f"{message}; a name is one host"
                continue
            where, name = first_by_address.setdefault(server.address, (here, server.name))
            if name != server.name:
                message = f"{server.address} is named {server.name!r} here but {name!r} in {where}"
                yield ("pool", pool_index, "servers", index, "name"), f"{message}; a host has one name"


def _route_issues(config: Config) -> Iterator[tuple[Loc, str]]:
    """Routes name existing pools, groups and listeners, and every route can be reached."""
    pools = {p.name for p in config.pools}
    listeners = set(config.balancer.listen)
    catch_all: int | None = None
    for index, route in enumerate(config.routes):
        loc: Loc = ("route", index)
        if catch_all is not None:
            yield loc, f"unreachable: route[{catch_all}] has no condition and matches every connection first"
        if route.pool is not None and route.pool not in pools:
            yield (*loc, "pool"), f"unknown pool {route.pool!r} (pools: {', '.join(sorted(pools))})"
        for g_index, group in enumerate(route.groups or ()):
            if group not in config.groups:
                yield (*loc, "groups", g_index), f"unknown group {group!r}: define it as [groups.{group}]"
        if route.listener is not None and route.listener not in listeners:
            yield (*loc, "listener"), f"{route.listener} is not one of [balancer] listen"
        if route.unconditional and catch_all is None:
            catch_all = index


def _group_issues(config: Config) -> Iterator[tuple[Loc, str]]:
    if config.directory.ldap is None:
        for name, group in config.groups.items():
            if group.ldap is not None:
                yield ("groups", name, "ldap"), "an LDAP group needs a [directory.ldap] section"
    for name, group in config.groups.items():
        if group.file is not None and not group.file.is_file():
            yield ("groups", name, "file"), f"no such file: {group.file}"


def _session_issues(config: Config) -> Iterator[tuple[Loc, str]]:
    """Each server's merged source is coherent, and the secrets it needs are there and safe."""
    section, needs_credentials, pushed = config.sessions, False, set()
    for p_index, pool in enumerate(config.pools):
        for s_index, server in enumerate(pool.servers):
            merged = merge(section, pool.sessions, server.sessions)
            try:
                check_merged(merged)
            except ValueError as exc:
                yield ("pool", p_index, "servers", s_index, "sessions"), str(exc)
            needs_credentials |= merged.source in POLLED - {"command"}
            if merged.source == "push":
                pushed.add(server.name)
    if section.credentials is not None:
        try:
            read_credentials(section.credentials)
        except ValueError as exc:
            yield ("sessions", "credentials"), str(exc)
    elif needs_credentials and credentials_from_env() is None:
        yield ("sessions", "credentials"), (
            'a "windows" source needs the service account: set [sessions] credentials to a 0600 TOML '
            "file (user, password, domain), or RDPBALANCER_SESSIONS_USER and _PASSWORD in the environment")
    if pushed and section.push_tokens is None:
        yield ("sessions", "push_tokens"), (f'{", ".join(sorted(pushed))} push their sessions (source = "push"): '
                                            "set [sessions] push_tokens to a 0600 file of SERVER = \"token\"")
    elif section.push_tokens is not None:
        servers = {s.name for p in config.pools for s in p.servers}
        try:
            tokens = read_push_tokens(section.push_tokens, servers)
        except ValueError as exc:
            yield ("sessions", "push_tokens"), str(exc)
        else:
            missing = sorted(pushed - set(tokens))
            if missing:
                yield ("sessions", "push_tokens"), f"{section.push_tokens} has no token for {', '.join(missing)}"
            clash = admin_token_clash(tokens, config.admin.token_file)  # read again at every load and reload
            if clash is not None:
                yield ("sessions", "push_tokens"), f"{section.push_tokens}: {clash}"
