"""Value types shared by the configuration sections: durations, addresses, names, paths.

Each is an ``Annotated`` type whose validator turns the TOML value into its parsed form and
raises ValueError with a message the loader shows next to the key's dotted path.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, PlainValidator, StrictStr, ValidationInfo

from rdpbalancer.config.addresses import BackendAddress, HostPort, ListenAddress, parse_host_port
from rdpbalancer.config.durations import EXAMPLES, format_duration, parse_duration

# A pydantic location: keys and list indexes from the root of the document.
Loc = tuple[str | int, ...]

DEFAULT_RDP_PORT = 3389  # the IANA port for ms-wbt-server; used when a server address has none
DEFAULT_HANDSHAKE_TIMEOUT_S = 5.0  # a real client sends its Connection Request within milliseconds
MAX_HANDSHAKE_TIMEOUT_S = 300.0  # longer only keeps idle port scanners' sockets open
DEFAULT_CONNECT_TIMEOUT_S = 4.0  # a LAN server answers in ms; leaves room to retry another one
DEFAULT_STICKY_TTL_S = 8 * 3600.0  # one working day: users reconnect to their session
DEFAULT_COMMIT_WINDOW_S = 0.003  # [sticky] commit_window (benchmarks/run.py C32: see the README)
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


def _listener_validator(value: object) -> ListenAddress:
    """ "host:port", or { address = "host:port", proxy_protocol = true }."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"address", "proxy_protocol"})
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}: a listener table has address and proxy_protocol")
        if "address" not in value:
            raise ValueError('a listener table needs address = "host:port"')
        proxy = value.get("proxy_protocol", False)
        if not isinstance(proxy, bool):
            raise ValueError("proxy_protocol: expected true or false")
        plain = _address_validator(ListenAddress, None, allow_any_port=True)(value["address"])
        return ListenAddress(plain.host, plain.port, proxy)
    if not isinstance(value, str | ListenAddress):
        raise ValueError('expected a "host:port" string or { address = "host:port", proxy_protocol = true }')
    return _address_validator(ListenAddress, None, allow_any_port=True)(value)  # type: ignore[return-value]


def _listener_text(value: ListenAddress) -> object:
    return {"address": str(value), "proxy_protocol": True} if value.proxy_protocol else str(value)


ListenAddressField = Annotated[
    # port 0: the kernel picks a free port (tests, and `rdpbalancer demo`); the log names it
    ListenAddress,
    PlainValidator(_address_validator(ListenAddress, None, allow_any_port=True)),
    PlainSerializer(str),
]
ListenerField = Annotated[  # `[balancer] listen`: an address, or a table with proxy_protocol
    ListenAddress,
    PlainValidator(_listener_validator),
    PlainSerializer(_listener_text),
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


def _duration_or_never(value: object) -> float:
    """A duration >= 0, or "never" (infinity): for delays that may be switched off."""
    if value == "never":
        return math.inf
    if isinstance(value, str) and parse_duration(value) == 0:
        return 0.0
    return _duration_validator()(value)


# A duration >= 0 or "never" (math.inf), in float seconds.
DurationOrNever = Annotated[float, BeforeValidator(_duration_or_never)]


def _duration_or_off(value: object) -> float:
    """A duration >= 0: "0s" switches the setting off."""
    if isinstance(value, str) and parse_duration(value) == 0:
        return 0.0
    return _duration_validator()(value)


# A duration >= 0 ("0s": off), in float seconds: slowstart.
DurationOrOff = Annotated[float, BeforeValidator(_duration_or_off)]

COMMIT_WINDOW_MAX_S = 0.05  # a window is added to a new user's first connection: keep it short


def _commit_window(value: object) -> float:
    """A duration >= 0 ("0ms" switches it off), at most COMMIT_WINDOW_MAX_S."""
    if isinstance(value, str) and parse_duration(value) == 0:
        return 0.0
    return _duration_validator(at_most_s=COMMIT_WINDOW_MAX_S)(value)


# [sticky] commit_window: "0ms" or a short duration, in float seconds.
CommitWindow = Annotated[float, BeforeValidator(_commit_window)]
