"""HAProxy backends (and listen sections) as rdpbalancer pools."""

from __future__ import annotations

from dataclasses import dataclass, field

from rdpbalancer.migrate.haproxy_cfg import reading
from rdpbalancer.migrate.health import HealthSettings, backend_health, check_port
from rdpbalancer.migrate.ledger import Ledger
from rdpbalancer.migrate.proxies import Proxy
from rdpbalancer.migrate.servers import ServerLine, ServerOptions, parse_options, parse_server, safe_name
from rdpbalancer.migrate.stickiness import StickRules, StickTable, read_rules, read_table
from rdpbalancer.migrate.values import duration, parse_time_ms

_FIRST_BACKUP = ("HAProxy sent new users to the first backup only (no `option allbackups`); rdpbalancer shares "
                 "them among all the pool's backups by weight: list one backup to keep one at a time")
_BACKUP_WHEN = ("a backup takes new users only while no other server can, as in HAProxy; in rdpbalancer a server "
                "at its max_sessions, in drain or at weight 0 counts as one that cannot")
_MAXCONN = ("HAProxy queued connections beyond maxconn, returning users' too; rdpbalancer refuses a new user "
            "at the cap (reason=full, nothing queued) and lets a user whose session is there through")
_SLOWSTART = ("as in HAProxy, the weight ramps after the server comes up or leaves maintenance; rdpbalancer also "
              "ramps a server added by a reload or raised from weight 0, starts at 5 % of the weight, and a "
              "ramping server is not preferred for being idle")


@dataclass(slots=True)
class ServerDraft:
    name: str
    address: str
    weight: int
    state: str | None = None
    check: str | None = None
    comments: list[str] = field(default_factory=list)
    left_out: bool = False  # written as a comment only
    shutdown_on_down: bool = False  # on-marked-down shutdown-sessions
    backup: bool = False
    max_sessions: int | None = None  # from maxconn
    slowstart: str | None = None  # from slowstart, as an rdpbalancer duration


@dataclass(slots=True)
class PoolDraft:
    kind: str  # "backend" or "listen"
    line: int
    haproxy_name: str
    name: str
    balance: str
    servers: list[ServerDraft]
    health: HealthSettings
    rules: StickRules
    table: StickTable | None
    connect_timeout_ms: float | None
    comments: list[str] = field(default_factory=list)


def translate_backend(proxy: Proxy, ledger: Ledger) -> PoolDraft | str:
    """The pool for ``proxy``, or the reason it has none."""
    if proxy.mode() != "tcp":
        return f"{proxy.mode()} mode: rdpbalancer relays RDP (TCP) only"
    lines = [line for d in proxy.own("server") if (line := parse_server(d, ledger)) is not None]
    if not lines:
        return "no usable server"
    ledger.use(proxy.header)
    name, comments = safe_name(proxy.name, "backend")
    defaults = _default_server(proxy, ledger)
    any_check = any(defaults.then(line.options).check for line in lines)
    port = check_port(proxy, ledger)
    health = backend_health(proxy, defaults, any_check, ledger)
    allbackups = proxy.last("option allbackups")
    ledger.use(allbackups)
    servers = [_server(line, defaults, health, ledger) for line in lines]
    _backup_notes(lines, servers, defaults, all_backups=allbackups is not None, ledger=ledger)
    comments += _check_port_notes(port, servers)
    balance = _balance(proxy, ledger, comments)
    rules, table = read_rules(proxy, ledger), read_table(proxy, ledger)
    pool = PoolDraft(proxy.kind, proxy.header.line, proxy.name, name, balance, servers, health, rules, table,
                     _connect_timeout_ms(proxy, ledger), comments)
    _skip_templates(proxy, ledger)
    return pool


def _connect_timeout_ms(proxy: Proxy, ledger: Ledger) -> float | None:
    """``timeout connect``; None when unset or 0 (HAProxy then waits without limit)."""
    directive = proxy.last("timeout connect")
    if directive is None or len(directive.words) < 3:
        return None
    ledger.use(directive)
    with reading(directive):
        return parse_time_ms(directive.words[2]) or None


def _default_server(proxy: Proxy, ledger: Ledger) -> ServerOptions:
    options = ServerOptions()
    for directive in proxy.inherited("default-server"):
        ledger.use(directive)
        options = options.then(parse_options(directive, directive.words[1:], ledger))
    return options


def _server(line: ServerLine, defaults: ServerOptions, health: HealthSettings, ledger: Ledger) -> ServerDraft:
    options = defaults.then(line.options)
    server = ServerDraft(line.name, line.address, options.weight if options.weight is not None else 1,
                         comments=list(line.notes))
    server.shutdown_on_down = bool(options.shutdown_on_down)
    if options.disabled:
        server.state = "maint"
        server.comments.append('disabled in HAProxy: state = "maint" (no users until you change it)')
    if health.check != "none" and not options.check:
        server.check = "none"
    if options.backup:
        server.backup = True
    if options.maxconn:  # maxconn 0: no limit
        server.max_sessions = options.maxconn
        ledger.differ(line.directive, f"maxconn {options.maxconn}", _MAXCONN)
        server.comments.append(f"maxconn {options.maxconn} -> max_sessions = {options.maxconn}: {_MAXCONN}")
    if options.slowstart_ms:
        server.slowstart = duration(options.slowstart_ms)
        ledger.differ(line.directive, f"slowstart {server.slowstart}", _SLOWSTART)
    if options.server_id is not None:
        server.comments.append(f"HAProxy id {options.server_id}: a `show table` dump names it server_id="
                               f"{options.server_id}")
    _own_timing(line, defaults, ledger)
    return server


def _own_timing(line: ServerLine, defaults: ServerOptions, ledger: Ledger) -> None:
    """Per-server inter/rise/fall that differ from the backend's: rdpbalancer sets them per pool."""
    own = line.options
    for word, mine, pool in (("inter", own.inter_ms, defaults.inter_ms), ("rise", own.rise, defaults.rise),
                             ("fall", own.fall, defaults.fall)):
        if mine is not None and mine != pool:
            ledger.skip(line.directive, "rdpbalancer sets check timing per pool ([health] or the pool's health)",
                        part=f"{word} {line.directive.words[line.directive.words.index(word, 3) + 1]}")


def _backup_notes(lines: list[ServerLine], servers: list[ServerDraft], defaults: ServerOptions, *,
                  all_backups: bool, ledger: Ledger) -> None:
    """What a backup means differently here, said once per backend (on its first backup)."""
    backups = [(line, server) for line, server in zip(lines, servers, strict=True) if server.backup]
    if not backups:
        return
    line, server = backups[0]
    ledger.differ(line.directive, "backup", _BACKUP_WHEN)
    server.comments.append(f"backup = true: {_BACKUP_WHEN}")
    if len(backups) > 1 and not all_backups:
        ledger.differ(line.directive, f"backup (and {len(backups) - 1} more)", _FIRST_BACKUP)
        server.comments.append(_FIRST_BACKUP)


def _check_port_notes(port: int | None, servers: list[ServerDraft]) -> list[str]:
    if port is None or all(server.address.endswith(f":{port}") for server in servers):
        return []
    return [f"HAProxy checked port {port}; rdpbalancer checks each server's own address and port"]


def _balance(proxy: Proxy, ledger: Ledger, comments: list[str]) -> str:
    directive = proxy.last("balance")
    ledger.use(directive)
    algorithm = directive.words[1] if directive is not None and len(directive.words) > 1 else None
    if algorithm == "leastconn":
        return "leastconn"
    shown = f"balance {algorithm}" if algorithm else "no balance line (HAProxy's default: roundrobin)"
    comments.append(f"{shown} -> leastconn, the closest rdpbalancer algorithm (\"leastsessions\" counts homed "
                    "users instead of open connections)")
    return "leastconn"


def _skip_templates(proxy: Proxy, ledger: Ledger) -> None:
    for directive in proxy.own("server-template"):
        ledger.skip(directive, "server templates (DNS discovery) have no equivalent: list the servers")


def reconcile_servers(pools: list[PoolDraft]) -> None:
    """One name per host and one host per name, across pools, as rdpbalancer requires.

    HAProxy allows "s1" in two backends for two hosts, or one host under two names; the first name
    seen for an address wins, and a name reused for another address gets its pool's name in front.
    """
    name_of: dict[str, str] = {}
    address_of: dict[str, str] = {}
    for pool in pools:
        for server in pool.servers:
            if server.left_out:
                continue
            _reconcile(server, pool.name, name_of, address_of)
            name_of.setdefault(server.address, server.name)
            address_of.setdefault(server.name, server.address)
        _leave_out_duplicates(pool)


def _reconcile(server: ServerDraft, pool: str, name_of: dict[str, str], address_of: dict[str, str]) -> None:
    known = name_of.get(server.address)
    if known is not None and known != server.name:
        server.comments.append(f"named {server.name!r} in HAProxy; one host has one name in rdpbalancer")
        server.name = known
    elif address_of.get(server.name, server.address) != server.address:
        renamed, _ = safe_name(f"{pool}.{server.name}", "server")
        server.comments.append(f"named {server.name!r} in HAProxy, a name another backend gives to "
                               f"{address_of[server.name]}; renamed: one name is one host in rdpbalancer")
        server.name = renamed


def _leave_out_duplicates(pool: PoolDraft) -> None:
    seen: set[str] = set()
    for server in pool.servers:
        if server.left_out:
            continue
        if server.address in seen or server.name in seen:
            server.left_out = True
            server.comments.append("the same host twice in one backend: listed once in rdpbalancer")
        seen.update((server.address, server.name))
