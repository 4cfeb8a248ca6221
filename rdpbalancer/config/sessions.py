"""``[sessions]``: where the session directory learns which sessions exist on each host, and its
per-pool / per-server overrides (``sessions = { ... }``). See policy/host_sessions.py for the rules."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Self

from pydantic import Field, StrictInt, model_validator

from rdpbalancer.config.base import ConfigModel
from rdpbalancer.config.types import ConfigPath, PositiveDuration

SourceKind = Literal["windows", "xrdp", "push", "command", "none"]
Trust = Literal["route", "hint"]

DEFAULT_SESSIONS_INTERVAL_S = 15.0  # a reconnect within 15 s of a logoff may still see the session
DEFAULT_SESSIONS_TIMEOUT_S = 5.0  # a LAN host lists its sessions in well under a second
DEFAULT_STALE_AFTER_S = 60.0  # four missed polls: the host's list is no evidence any more
# a Windows logon under load takes up to a minute or two before the host lists the user
# (policy/host_sessions.py DEFAULT_LOGON_GRACE_S); at most a day, as for other durations of this section
DEFAULT_LOGON_GRACE_S = 120.0
DEFAULT_MAX_PARALLEL = 8  # queries under way at once (threads for impacket, subprocesses)
MAX_PARALLEL = 64
WINDOWS_SMB_PORT = 445  # MS-TSTS over SMB named pipes
POLLED = frozenset({"windows", "command"})


class SessionsSection(ConfigModel):
    """``[sessions]``: the defaults for every server."""

    source: SourceKind = "none"
    interval: PositiveDuration = DEFAULT_SESSIONS_INTERVAL_S
    timeout: PositiveDuration = DEFAULT_SESSIONS_TIMEOUT_S
    stale_after: PositiveDuration = DEFAULT_STALE_AFTER_S
    trust: Trust = "route"
    # a user's missing session overrides her sticky entry only once the entry is this old (a
    # logon takes time to show in a host's list); changes on reload
    logon_grace: PositiveDuration = DEFAULT_LOGON_GRACE_S
    # a 0600 TOML file with `user`, `password` and optionally `domain`; without it, the
    # environment's RDPBALANCER_SESSIONS_USER / _PASSWORD / _DOMAIN
    credentials: ConfigPath | None = None
    # source = "command": the program and its arguments; "{server}", "{host}" and "{port}" are
    # replaced; it prints the host's sessions as JSON (README "Session directory")
    command: tuple[str, ...] = ()
    port: StrictInt | None = Field(default=None, ge=1, le=65535)  # a windows host's SMB port (445)
    # source = "push": a 0600 TOML file of `SERVER = "token"`, one token per host (re-read on reload)
    push_tokens: ConfigPath | None = None
    max_parallel: StrictInt = Field(default=DEFAULT_MAX_PARALLEL, ge=1, le=MAX_PARALLEL)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _check(self.source, self.command, self.interval, self.stale_after)
        return self


class SessionsOverride(ConfigModel):
    """``sessions = { ... }`` on a pool or a server: any of these, for its servers."""

    source: SourceKind | None = None
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    stale_after: PositiveDuration | None = None
    trust: Trust | None = None
    logon_grace: PositiveDuration | None = None
    command: tuple[str, ...] | None = None
    port: StrictInt | None = Field(default=None, ge=1, le=65535)


class ServerSessionsOverride(SessionsOverride):
    """``sessions = { ... }`` on a server: `trust` and `logon_grace` are its pool's choice (how a
    user of the pool is routed)."""

    @model_validator(mode="after")
    def _no_trust(self) -> Self:
        for key in ("trust", "logon_grace"):
            if getattr(self, key) is not None:
                raise ValueError(f"{key} is set for a whole pool ([sessions] or the pool's sessions = "
                                 f"{{ {key} = ... }}), not for one server")
        return self


XRDP_REFUSED = ('xrdp 0.9 (Debian 12) does not tell user names over sesman\'s port: xrdp-sesadmin\'s list has '
                'session ids and times only. Let each xrdp host report itself: source = "push" with '
                'contrib/xrdp-sessions.sh run by a timer on the host (README "Session directory")')


def _check(source: str, command: tuple[str, ...], interval: float, stale_after: float) -> None:
    if source == "xrdp":
        raise ValueError(XRDP_REFUSED)
    if source == "command" and not command:
        raise ValueError('source = "command" needs `command`, the program that prints the sessions as JSON, '
                         'e.g. command = ["/usr/local/bin/list-sessions", "{host}"]')
    if source in POLLED and stale_after < interval:
        raise ValueError(f"stale_after ({stale_after:g}s) is shorter than interval ({interval:g}s): every host's "
                         "list would be stale before it is asked again")


@dataclass(frozen=True, slots=True)
class ServerSessions:
    """One server's settings after its overrides: its own, then its pool's, then [sessions]."""

    source: str
    interval: float
    timeout: float
    stale_after: float
    trust: str
    logon_grace: float
    command: tuple[str, ...]
    port: int | None


def merge(section: SessionsSection, *overrides: SessionsOverride) -> ServerSessions:
    values = {f.name: getattr(section, f.name) for f in fields(ServerSessions)}
    for override in overrides:
        values.update({k: v for k in values if (v := getattr(override, k)) is not None})
    return ServerSessions(**values)


def check_merged(merged: ServerSessions) -> None:
    _check(merged.source, merged.command, merged.interval, merged.stale_after)
