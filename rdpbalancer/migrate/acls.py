"""HAProxy ``acl`` lines that rdpbalancer can express: user names (groups) and client addresses.

``acl NAME rdp_cookie(mstshash)[,bytes(0,N)] [-m str] [-i] -f FILE | VALUES`` becomes a group and
``acl NAME src NETWORKS`` a route's ``sources``. Several ``acl`` lines with one name are ORed by
HAProxy; they translate when all are of one kind. Anything else is kept with the reason it cannot be
expressed, reported only if a rule uses it (or nothing does).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from rdpbalancer.migrate.haproxy_cfg import Directive, MigrationError
from rdpbalancer.migrate.proxies import Proxy

# The mstshash cookie, by its current and its deprecated fetch name, optionally cut to N bytes.
COOKIE_FETCH = re.compile(r"(?:req\.)?rdp_cookie\((?i:mstshash)\)(?:,bytes\(0,([0-9]+)\))?")


@dataclass(frozen=True, slots=True)
class CookieAcl:
    """Matches the mstshash cookie against ``files`` and ``values``, each with its ignore-case flag."""

    directive: Directive
    files: tuple[tuple[str, bool], ...]
    values: tuple[tuple[str, bool], ...]
    prefix: int | None


@dataclass(frozen=True, slots=True)
class SourceAcl:
    directive: Directive
    networks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OtherAcl:
    directive: Directive
    reason: str


Acl = CookieAcl | SourceAcl | OtherAcl


@dataclass(frozen=True, slots=True)
class _Pattern:
    files: tuple[tuple[str, bool], ...]
    values: tuple[tuple[str, bool], ...]
    method: str | None
    map_file: bool


def read_acls(proxy: Proxy) -> dict[str, list[Acl]]:
    """The proxy's ACLs by name, in file order."""
    acls: dict[str, list[Acl]] = {}
    for directive in proxy.own("acl"):
        if len(directive.words) < 3:
            raise MigrationError(directive.line, "acl needs a name and a criterion")
        acls.setdefault(directive.words[1], []).append(parse_acl(directive))
    return acls


def parse_acl(directive: Directive) -> Acl:
    criterion = directive.words[2]
    pattern = _patterns(directive.words[3:])
    if pattern.map_file:
        return OtherAcl(directive, "map files (-M) have no equivalent")
    cookie = COOKIE_FETCH.fullmatch(criterion)
    if cookie is not None:
        return _cookie_acl(directive, pattern, int(cookie[1]) if cookie[1] else None)
    if criterion == "src":
        return _source_acl(directive, pattern)
    return OtherAcl(directive, f"the criterion {criterion!r} has no equivalent: rdpbalancer routes on user "
                    "names and groups, client addresses, the collection and the listener")


def _patterns(words: tuple[str, ...]) -> _Pattern:
    """Flags, then values (configuration.txt 7.1): "-i" applies to the patterns after it."""
    files: list[tuple[str, bool]] = []
    values: list[tuple[str, bool]] = []
    ignore_case, method, map_file, flags = False, None, False, True
    index = 0
    while index < len(words):
        word, following = words[index], words[index + 1] if index + 1 < len(words) else ""
        if flags and word in ("-f", "-M", "-m", "-u"):
            files += [(following, ignore_case)] if word in ("-f", "-M") else []
            method = following if word == "-m" else method
            map_file = map_file or word == "-M"
            index += 1
        elif flags and word in ("-i", "-n", "--"):
            ignore_case = ignore_case or word == "-i"
            flags = word != "--"
        else:
            flags = False
            values.append((word, ignore_case))
        index += 1
    return _Pattern(tuple(files), tuple(values), method, map_file)


def _cookie_acl(directive: Directive, pattern: _Pattern, prefix: int | None) -> Acl:
    if pattern.method not in (None, "str"):
        return OtherAcl(directive, f"-m {pattern.method}: only exact user name matches (-m str) translate")
    return CookieAcl(directive, pattern.files, pattern.values, prefix)


def _source_acl(directive: Directive, pattern: _Pattern) -> Acl:
    if pattern.files:
        return OtherAcl(directive, "src -f FILE: copy the networks into the route's sources = [...] by hand")
    if pattern.method not in (None, "ip"):
        return OtherAcl(directive, f"src -m {pattern.method} has no equivalent")
    try:
        networks = tuple(str(ipaddress.ip_network(value, strict=False)) for value, _ in pattern.values)
    except ValueError:
        return OtherAcl(directive, "src with host names or invalid networks has no equivalent")
    return SourceAcl(directive, networks)
