"""HAProxy frontends (and listen sections): listen addresses and routes.

``use_backend POOL if ACL`` becomes a ``[[route]]`` when ACL is one user-name or address ACL;
``default_backend`` becomes the last route, without a condition. Conditions with several terms
(``A B``, ``A || B``, ``!A``, ``unless``) are not translated: the admin writes those routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdpbalancer.migrate.acls import Acl, CookieAcl, OtherAcl, SourceAcl, read_acls
from rdpbalancer.migrate.groups import GroupRegistry
from rdpbalancer.migrate.haproxy_cfg import Directive, MigrationError, reading
from rdpbalancer.migrate.ledger import Ledger
from rdpbalancer.migrate.proxies import Proxy
from rdpbalancer.migrate.values import listen_addresses, parse_time_ms

# Bind options followed by an argument, so that one without equivalent does not swallow the next.
_BIND_OPTION_ARGUMENTS = frozenset({"name", "id", "interface", "process", "thread", "namespace", "mss",
                                    "backlog", "maxconn", "nice", "crt", "crt-list", "ca-file", "ca-sign-file",
                                    "crl-file", "alpn", "npn", "ssl-min-ver", "ssl-max-ver", "ciphers",
                                    "ciphersuites", "curves", "ecdhe", "sigalgs", "client-sigalgs", "verify",
                                    "tcp-ut", "user", "group", "mode", "uid", "gid", "level", "proto", "label",
                                    "severity-output", "shards"})
# "name"/"id" only label the socket; "v6only" is how an rdpbalancer [::] listener always behaves;
# "v4v6" is handled by the dual-stack note.
_TRANSLATED_BIND_OPTIONS = frozenset({"name", "id", "v6only", "v4v6"})
_UNREACHABLE = "never reached: a `use_backend` above without a condition takes every connection"
_COOKIE_ACCEPT = ("tcp-request", "content", "accept", "if", "RDP_COOKIE")
_COOKIE_REJECTS = {("tcp-request", "content", "reject", "if", "!RDP_COOKIE"),
                   ("tcp-request", "content", "reject", "unless", "RDP_COOKIE")}


@dataclass(slots=True)
class RouteDraft:
    conditions: dict[str, list[str]]
    pool: str | None = None  # None: deny
    comments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FrontendDraft:
    name: str
    listen: list[str] = field(default_factory=list)
    bind_sources: list[str] = field(default_factory=list)  # "from `bind *:3389` (line 15, frontend fr_rdp)"
    routes: list[RouteDraft] = field(default_factory=list)
    handshake: Directive | None = None  # tcp-request inspect-delay
    reject_without_cookie: bool = False
    comments: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Targets:
    """What a backend name stands for: a pool name, or the reason it has no pool."""

    pools: dict[str, str]
    reasons: dict[str, str]


def translate_frontend(proxy: Proxy, targets: Targets, groups: GroupRegistry, ledger: Ledger) -> FrontendDraft:
    ledger.use(proxy.header)
    draft = FrontendDraft(proxy.name)
    for directive in proxy.own("bind"):
        draft.listen += _bind(directive, draft, ledger)
    _tcp_requests(proxy, draft, ledger)
    acls = read_acls(proxy)
    for directive in proxy.own("use_backend"):
        if _routes_all(draft):
            ledger.skip(directive, _UNREACHABLE)
        elif (route := _use_backend(directive, acls, targets, groups, ledger)) is not None:
            draft.routes.append(route)
    if not _routes_all(draft):
        draft.routes.append(_default_route(proxy, targets, ledger))
    elif (default := proxy.last("default_backend")) is not None:
        ledger.skip(default, _UNREACHABLE)
    _report_acls(acls, ledger)
    return draft


def _routes_all(draft: FrontendDraft) -> bool:
    """A route without condition takes every connection: HAProxy never reached the rules after it."""
    return any(not route.conditions for route in draft.routes)


def _bind(directive: Directive, draft: FrontendDraft, ledger: Ledger) -> list[str]:
    if len(directive.words) < 2:
        raise MigrationError(directive.line, "bind without an address")
    try:
        addresses = listen_addresses(directive.words[1])
    except ValueError as error:
        ledger.skip(directive, f"listener left out: {error}")
        return []
    ledger.use(directive)
    draft.bind_sources.append(f"from `{directive.text}` (line {directive.line}, frontend {draft.name})")
    options = directive.words[2:]
    index = 0
    while index < len(options):
        option = options[index]
        argument = options[index + 1 : index + 2] if option in _BIND_OPTION_ARGUMENTS else ()
        index += 1 + len(argument)
        if option not in _TRANSLATED_BIND_OPTIONS:
            ledger.skip(directive, "no rdpbalancer equivalent", part=" ".join((option, *argument)))
    draft.comments += _dual_stack_notes(directive, addresses)
    return addresses


def _dual_stack_notes(directive: Directive, addresses: list[str]) -> list[str]:
    if "v6only" in directive.words or not any(a.startswith("[::]:") for a in addresses):
        return []
    return [f"`{directive.text}` (line {directive.line}): HAProxy's IPv6 wildcard usually accepted IPv4 clients "
            'too (v4v6, or the system default); an rdpbalancer listener on [::] is IPv6-only: add "0.0.0.0:PORT" '
            "for dual stack"]


def _tcp_requests(proxy: Proxy, draft: FrontendDraft, ledger: Ledger) -> None:
    for directive in proxy.own("tcp-request inspect-delay", "tcp-request content", "tcp-request connection",
                               "tcp-request session"):
        if directive.key == "tcp-request inspect-delay" and len(directive.words) > 2:
            ledger.use(directive)
            draft.handshake = directive
        elif directive.words == _COOKIE_ACCEPT:
            ledger.use(directive)
        elif directive.words in _COOKIE_REJECTS:
            ledger.use(directive)
            draft.reject_without_cookie = True
        else:
            ledger.skip(directive, "rdpbalancer reads the whole Connection Request before routing; other "
                        "tcp-request rules have no equivalent (a [[route]] with deny = true can refuse clients)")


def handshake_ms(directive: Directive) -> float:
    with reading(directive):
        return parse_time_ms(directive.words[2])


def _use_backend(directive: Directive, acls: dict[str, list[Acl]], targets: Targets, groups: GroupRegistry,
                 ledger: Ledger) -> RouteDraft | None:
    words = directive.words
    if len(words) < 2:
        raise MigrationError(directive.line, "use_backend without a backend")
    if "%[" in words[1]:
        ledger.skip(directive, "backend names computed at run time have no equivalent: write one route per pool")
        return None
    pool = _pool(directive, words[1], targets, ledger)
    if pool is None:
        return None
    conditions = _conditions(directive, words[2:], acls, groups, ledger)
    if conditions is None:
        return None
    ledger.use(directive)
    return RouteDraft(conditions, pool, [f"from `{directive.text}` (line {directive.line})"])


def _pool(directive: Directive, backend: str, targets: Targets, ledger: Ledger) -> str | None:
    if backend in targets.pools:
        return targets.pools[backend]
    if backend in targets.reasons:
        ledger.skip(directive, f"backend {backend} has no pool: {targets.reasons[backend]}")
        return None
    raise MigrationError(directive.line, f"backend {backend!r} is not defined")


def _conditions(directive: Directive, words: tuple[str, ...], acls: dict[str, list[Acl]],
                groups: GroupRegistry, ledger: Ledger) -> dict[str, list[str]] | None:
    """The route conditions for ``if ACL``; None (and a ledger entry) when there are none that fit."""
    if not words:
        return {}
    if words[0] != "if" or len(words) != 2 or words[1].startswith(("!", "{")) or words[1] not in acls:
        ledger.skip(directive, "only `if ACL` with one user-name or address ACL translates; write this route "
                    "by hand (conditions in one [[route]] must all match; routes are tried in order)")
        return None
    found = acls[words[1]]
    if all(isinstance(acl, CookieAcl) for acl in found):
        names = [name for acl in found if isinstance(acl, CookieAcl) for name in groups.for_acl(words[1], acl)]
        ledger.use(*(acl.directive for acl in found))
        return {"groups": names}
    if all(isinstance(acl, SourceAcl) for acl in found):
        ledger.use(*(acl.directive for acl in found))
        return {"sources": [n for acl in found if isinstance(acl, SourceAcl) for n in acl.networks]}
    reasons = "; ".join(acl.reason for acl in found if isinstance(acl, OtherAcl)) or "mixes criteria"
    ledger.skip(directive, f"ACL {words[1]}: {reasons}")
    return None


def _default_route(proxy: Proxy, targets: Targets, ledger: Ledger) -> RouteDraft:
    directive = proxy.last("default_backend")
    if directive is None and proxy.kind == "listen":
        return RouteDraft({}, targets.pools.get(proxy.name), [f"listen {proxy.name}: its own servers"])
    if directive is None or len(directive.words) < 2:
        return RouteDraft({}, None, [f"{proxy.kind} {proxy.name} has no default_backend: HAProxy closed "
                                     "connections no rule matched, so does this route"])
    pool = _pool(directive, directive.words[1], targets, ledger)
    if pool is None:
        return RouteDraft({}, None, [f"`{directive.text}` (line {directive.line}) has no pool: denied"])
    ledger.use(directive)
    return RouteDraft({}, pool, [f"from `{directive.text}` (line {directive.line})"])


def _report_acls(acls: dict[str, list[Acl]], ledger: Ledger) -> None:
    for found in acls.values():
        for acl in found:
            if not ledger.seen(acl.directive):
                reason = acl.reason if isinstance(acl, OtherAcl) else "not used by any translated rule"
                ledger.skip(acl.directive, reason)
