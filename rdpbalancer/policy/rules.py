"""Routing rules: `[[route]]` entries, evaluated in order, first match wins.

Each condition is optional and all present conditions must hold. Evaluation can record why
each route matched or not (`trace`), which `rdpbalancer explain` prints: the same code decides
live connections and explains them.

Truncated cookies: mstsc may send only the first N characters of the login name. With
`truncated_length = N`, a cookie of exactly N characters stands for every directory user whose
name starts with it; a route's user/group condition holds if it holds for any of them. When
those users would be routed differently, the decision is ambiguous: the first route matching
any of them applies, and the ambiguity is reported (logged and counted by the shell).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from rdpbalancer.policy.identity import strip_domain_part
from rdpbalancer.policy.ports import GroupMembership

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class TimeRule:
    """Days of the week and a window of minutes in a time zone; a window may cross midnight
    (22:00-06:00), and then belongs to the day it starts on."""

    days: frozenset[int]  # 0 = Monday
    start_min: int
    end_min: int  # exclusive; 1440 = midnight at the end of the day
    timezone: str = "UTC"

    def matches(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        minute, day = local.hour * 60 + local.minute, local.weekday()
        if self.start_min < self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        if minute >= self.start_min:
            return day in self.days
        return minute < self.end_min and (day - 1) % 7 in self.days

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {self.start_min // 60:02d}:{self.start_min % 60:02d}-" \
               f"{self.end_min // 60:02d}:{self.end_min % 60:02d} {self.timezone}"


@dataclass(frozen=True, slots=True)
class Route:
    label: str  # "route[2]" or "route[2] (sales)"
    pool: str | None = None
    deny: bool = False
    users: frozenset[str] | None = None  # normalised user keys
    groups: tuple[str, ...] | None = None
    sources: tuple[IPNetwork, ...] | None = None
    time: TimeRule | None = None
    collection: str | None = None  # compared case-insensitively
    listener: str | None = None  # "host:port" as in [balancer] listen

    @property
    def action(self) -> str:
        return "deny" if self.deny else f"pool {self.pool}"


@dataclass(frozen=True, slots=True)
class MatchInput:
    """What a route is matched against."""

    users: tuple[str, ...]  # the user key, or every user a truncated cookie may stand for
    client_ip: IPAddress | None
    now: float
    collection: str | None
    listener: str | None
    membership: GroupMembership


@dataclass(slots=True)
class Trace:
    steps: list[tuple[str, bool, str]] = field(default_factory=list)  # (route label, matched, why)


def first_match(routes: Sequence[Route], given: MatchInput, trace: Trace | None = None) -> Route | None:
    for route in routes:
        why = mismatch(route, given)
        if trace is not None:
            trace.steps.append((route.label, why is None, why or f"matched -> {route.action}"))
        if why is None:
            return route
    return None


def mismatch(route: Route, given: MatchInput) -> str | None:
    """None if `route` matches; else the first condition that fails, in words."""
    if route.listener is not None and given.listener != route.listener:
        return f"listener {given.listener} is not {route.listener}"
    if route.sources is not None and not _source_ok(route.sources, given.client_ip):
        return f"source {given.client_ip} not in {', '.join(map(str, route.sources))}"
    if route.collection is not None and (given.collection or "").casefold() != route.collection.casefold():
        return f"collection {given.collection or '-'} is not {route.collection}"
    if route.time is not None and not route.time.matches(given.now):
        return f"outside {route.time.describe()}"
    if route.users is not None and not any(u in route.users for u in given.users):
        return "user not listed" if given.users else "no user name (no cookie)"
    if route.groups is not None and not _in_groups(route.groups, given):
        return f"user in none of {', '.join(route.groups)}" if given.users else "no user name (no cookie)"
    return None


def _source_ok(sources: tuple[IPNetwork, ...], ip: IPAddress | None) -> bool:
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 from a dual-stack listener is 10.1.2.3
    return any(ip in net for net in sources)


def _in_groups(groups: tuple[str, ...], given: MatchInput) -> bool:
    # directories hold bare account names: CORP\bob is bob there, whatever strip_domain says
    return any(not given.membership.groups_of(strip_domain_part(u)).isdisjoint(groups) for u in given.users)


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
