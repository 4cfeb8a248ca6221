"""``server`` and ``default-server`` lines: the options rdpbalancer has, and why the others go.

Options are read in HAProxy's order of precedence: the defaults' ``default-server``, the
backend's ``default-server``, then the ``server`` line itself.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from rdpbalancer.migrate.haproxy_cfg import Directive, MigrationError, reading
from rdpbalancer.migrate.ledger import Ledger
from rdpbalancer.migrate.values import parse_int, parse_time_ms, server_address

MAX_WEIGHT = 256  # HAProxy's and rdpbalancer's upper bound for a server weight
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_NAME_LENGTH = 64  # rdpbalancer's limit on pool and server names

_NO_LIMIT = "rdpbalancer has no per-server connection limit other than max_sessions (from maxconn)"
_TLS = "rdpbalancer relays RDP's own TLS untouched and adds none to the server leg"
_OBSERVE = "rdpbalancer marks servers up or down from its health checks only"
_PROXY_PROTOCOL = "rdpbalancer does not send a PROXY protocol header (RDP servers do not read one)"
_ONE_INTERVAL = "rdpbalancer checks at one interval per pool"
_RESOLVER = "host names are resolved by the system resolver"
_OPTION_REASONS = {
    "minconn": _NO_LIMIT, "maxqueue": "rdpbalancer queues nobody: a new user finds a server or is refused",
    "pool-max-conn": _NO_LIMIT,
    "send-proxy": _PROXY_PROTOCOL, "send-proxy-v2": _PROXY_PROTOCOL,
    "ssl": _TLS, "verify": _TLS, "sni": _TLS, "crt": _TLS, "ca-file": _TLS, "alpn": _TLS,
    "cookie": "HTTP cookie persistence has no meaning for RDP",
    "observe": _OBSERVE, "on-error": _OBSERVE, "error-limit": _OBSERVE, "on-marked-up": _OBSERVE,
    "track": _OBSERVE,
    "on-marked-down": "only `on-marked-down shutdown-sessions` has an equivalent ([health] on_down)",
    "fastinter": _ONE_INTERVAL, "downinter": _ONE_INTERVAL,
    "agent-check": "no agent checks: change weights through the admin API instead",
    "addr": "rdpbalancer checks the server's own address",
    "resolvers": _RESOLVER, "init-addr": _RESOLVER,
    "source": "rdpbalancer does not choose a source address",
}
# Options followed by an argument, so that an unknown one does not swallow the next option.
_WITH_ARGUMENT = frozenset(
    {"addr", "agent-addr", "agent-inter", "agent-port", "agent-send", "alpn", "ca-file", "check-alpn",
     "check-proto", "check-sni", "ciphers", "ciphersuites", "cookie", "crl-file", "crt", "downinter",
     "error-limit", "fall", "fastinter", "id", "init-addr", "inter", "log-proto", "maxconn", "maxqueue",
     "max-reuse", "minconn", "namespace", "npn", "observe", "on-error", "on-marked-down", "on-marked-up",
     "pool-low-conn", "pool-max-conn", "pool-purge-delay", "port", "proto", "redir", "resolve-net",
     "resolve-opts", "resolve-prefer", "resolvers", "rise", "shard", "slowstart", "sni", "source", "socks4",
     "ssl-max-ver", "ssl-min-ver", "track", "verify", "verifyhost", "weight", "ws"}
)
_FLAGS = {"check": ("check", True), "no-check": ("check", False), "disabled": ("disabled", True),
          "enabled": ("disabled", False), "backup": ("backup", True), "no-backup": ("backup", False)}


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The options rdpbalancer can use; None: not given on this line."""

    weight: int | None = None
    check: bool | None = None
    disabled: bool | None = None
    backup: bool | None = None
    inter_ms: float | None = None
    rise: int | None = None
    fall: int | None = None
    check_port: int | None = None
    server_id: int | None = None
    shutdown_on_down: bool | None = None  # on-marked-down shutdown-sessions
    maxconn: int | None = None  # 0 in HAProxy: no limit
    slowstart_ms: float | None = None

    def then(self, later: ServerOptions) -> ServerOptions:
        """These options overridden by ``later``'s."""
        changes = {f.name: getattr(later, f.name) for f in dataclasses.fields(later)
                   if getattr(later, f.name) is not None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ServerLine:
    directive: Directive
    name: str
    address: str
    options: ServerOptions
    notes: list[str] = field(default_factory=list)


def parse_server(directive: Directive, ledger: Ledger) -> ServerLine | None:
    """``server NAME ADDRESS [options]``; None (and a ledger entry) when the address cannot be used."""
    if len(directive.words) < 3:
        raise MigrationError(directive.line, "server line needs a name and an address")
    ledger.use(directive)
    name, notes = safe_name(directive.words[1], "server")
    try:
        address, port_missing = server_address(directive.words[2])
    except ValueError as error:
        ledger.skip(directive, f"server left out: {error}")
        return None
    if port_missing:
        notes.append("HAProxy's address had no port (it used the client's destination port); 3389 assumed")
    options = parse_options(directive, directive.words[3:], ledger)
    return ServerLine(directive, name, address, options, notes)


def parse_options(directive: Directive, words: tuple[str, ...], ledger: Ledger) -> ServerOptions:
    values: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index]
        argument = words[index + 1] if word in _WITH_ARGUMENT and index + 1 < len(words) else None
        index += 2 if argument is not None else 1
        if word in _FLAGS:
            attribute, value = _FLAGS[word]
            values[attribute] = value
        elif not _read_value(directive, word, argument, values):
            shown = word if argument is None else f"{word} {argument}"
            ledger.skip(directive, _OPTION_REASONS.get(word, "no rdpbalancer equivalent"), part=shown)
    return ServerOptions(**values)


def _read_value(directive: Directive, word: str, argument: str | None, values: dict[str, Any]) -> bool:
    """Store a translatable option with an argument; False when ``word`` is not one."""
    if word == "on-marked-down" and argument == "shutdown-sessions":
        values["shutdown_on_down"] = True
        return True
    readers = {"weight": _weight, "inter": parse_time_ms, "rise": _count, "fall": _count, "port": _count,
               "id": _count, "maxconn": _count, "slowstart": parse_time_ms}
    if word not in readers or argument is None:
        return False
    attribute = {"inter": "inter_ms", "port": "check_port", "id": "server_id",
                 "slowstart": "slowstart_ms"}.get(word, word)
    with reading(directive):
        values[attribute] = readers[word](argument)
    return True


def _weight(text: str) -> int:
    weight = parse_int(text, "weight")
    if weight > MAX_WEIGHT:
        raise ValueError(f"weight {weight} is above {MAX_WEIGHT}")
    return weight


def _count(text: str) -> int:
    return parse_int(text, "number")


def safe_name(name: str, what: str) -> tuple[str, list[str]]:
    """``name`` made valid for rdpbalancer (1-64 of A-Z a-z 0-9 _ . -), with a note if changed."""
    safe = _NAME_CHARS.sub("_", name)[:_MAX_NAME_LENGTH]
    if safe == name:
        return name, []
    return safe, [f"{what} {name!r} renamed {safe!r}: rdpbalancer names use 1-64 of A-Z a-z 0-9 _ . -"]
