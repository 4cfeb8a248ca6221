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

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rdpbalancer.config.addresses import BackendAddress, HostPort, ListenAddress, parse_host_port
from rdpbalancer.config.durations import EXAMPLES, format_duration, parse_duration

# A pydantic location: keys and list indexes from the root of the document.
Loc = tuple[str | int, ...]

DEFAULT_RDP_PORT = 3389  # the IANA port for ms-wbt-server; used when a server address has none
DEFAULT_HANDSHAKE_TIMEOUT_S = 5.0  # a real client sends its Connection Request within milliseconds
MAX_HANDSHAKE_TIMEOUT_S = 300.0  # longer only keeps idle port scanners' sockets open
DEFAULT_CONNECT_TIMEOUT_S = 4.0  # a LAN server answers in ms; leaves room to retry another one
DEFAULT_STICKY_TTL_S = 8 * 3600.0  # one working day: users reconnect to their session
DEFAULT_STICKY_PATH = "/var/lib/rdpbalancer/sticky.db"
MAX_WEIGHT = 256  # same range as HAProxy's server weight

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConfigIssues(ValueError):
    """Several problems found by a cross-field check, each with its location.

    Raised from validators; the loader expands it into one error per issue, each located
    at the validator's own location plus the issue's ``loc``.
    """

    def __init__(self, issues: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(message for _, message in issues))
        self.issues = issues


def _raise_issues(issues: list[tuple[Loc, str]]) -> None:
    if issues:
        raise ConfigIssues(issues)


# --- value types -------------------------------------------------------------------------


def _duration_validator(*, at_most_s: float | None = None) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                f"a plain number is ambiguous (seconds? milliseconds?): write the unit, "
                f'e.g. "{value}s" or "{value}ms"'
            )
        if not isinstance(value, str):
            raise ValueError(f'expected a duration string such as "5s" (examples: {EXAMPLES})')
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError(f"duration must be greater than zero, got {value!r}")
        if at_most_s is not None and seconds > at_most_s:
            raise ValueError(f"duration must be at most {format_duration(at_most_s)}, got {value!r}")
        return seconds

    return check


# A duration > 0, in float seconds.
PositiveDuration = Annotated[float, BeforeValidator(_duration_validator())]


def _address_validator(
    kind: type[HostPort], default_port: int | None, *, allow_any_port: bool = False
) -> Callable[[object], HostPort]:
    def check(value: object) -> HostPort:
        if isinstance(value, kind):  # built in Python rather than read from TOML
            return value
        if not isinstance(value, str):
            raise ValueError('expected a "host:port" string')
        return kind(*parse_host_port(value, default_port, allow_any_port=allow_any_port))

    return check


ListenAddressField = Annotated[
    # port 0: the kernel picks a free port (tests, and `rdpbalancer demo`); the log names it
    ListenAddress,
    PlainValidator(_address_validator(ListenAddress, None, allow_any_port=True)),
    PlainSerializer(str),
]
BackendAddressField = Annotated[
    BackendAddress,
    PlainValidator(_address_validator(BackendAddress, DEFAULT_RDP_PORT)),
    PlainSerializer(str),
]


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -")
    return value


Name = Annotated[StrictStr, AfterValidator(_check_name)]


def _resolve_path(value: object, info: ValidationInfo) -> Path:
    """A file path; a relative one is taken relative to the configuration file's directory."""
    if isinstance(value, Path):  # built in Python rather than read from TOML
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty path string")
    base_dir = Path((info.context or {}).get("base_dir", os.getcwd()))
    return Path(os.path.abspath(base_dir / value))


ConfigPath = Annotated[Path, PlainValidator(_resolve_path), PlainSerializer(str)]


# --- sections ------------------------------------------------------------------------------


class ConfigModel(BaseModel):
    """Base of every section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BalancerSection(ConfigModel):
    """``[balancer]``: where to listen and how to treat new connections."""

    listen: tuple[ListenAddressField, ...] = (ListenAddress("0.0.0.0", DEFAULT_RDP_PORT),)
    handshake_timeout: Annotated[
        float, BeforeValidator(_duration_validator(at_most_s=MAX_HANDSHAKE_TIMEOUT_S))
    ] = DEFAULT_HANDSHAKE_TIMEOUT_S
    connect_timeout: PositiveDuration = DEFAULT_CONNECT_TIMEOUT_S
    no_cookie: Literal["source-ip", "balance", "reject"] = "source-ip"
    max_connect_attempts: StrictInt = Field(default=3, ge=1)

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


class IdentitySection(ConfigModel):
    """``[identity]``: how the user name from the mstshash cookie is normalised."""

    strip_domain: StrictBool = True


class StickySection(ConfigModel):
    """``[sticky]``: the table that sends a returning user back to the same server."""

    path: ConfigPath = Path(DEFAULT_STICKY_PATH)
    ttl: PositiveDuration = DEFAULT_STICKY_TTL_S
    max_entries: StrictInt = Field(default=100_000, ge=1)
    sync: Literal["full", "normal"] = "full"


class LogSection(ConfigModel):
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class ServerConfig(ConfigModel):
    """One RDP server of a pool: ``{ name = "TS01", address = "172.16.50.11:3389", weight = 10 }``."""

    name: Name
    address: BackendAddressField
    weight: StrictInt = Field(default=1, ge=0, le=MAX_WEIGHT)  # 0: keeps its users, takes no new ones


class PoolConfig(ConfigModel):
    """``[[pool]]``: a named set of servers and the algorithm that balances between them."""

    name: Name
    balance: Literal["leastconn", "leastsessions"] = "leastconn"
    servers: tuple[ServerConfig, ...]

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
    sticky: StickySection = StickySection()
    log: LogSection = LogSection()
    pools: tuple[PoolConfig, ...] = Field(alias="pool")

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
        _raise_issues([*_duplicate_pool_names(self.pools), *_inconsistent_servers(self.pools)])
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
