"""Admission limits: how many connections, from whom, how fast; and how many new users a source
may create. Pure: the caller passes the time; nothing here does I/O.

`Admission` is asked once per accepted connection (`admit`) and told when the connection leaves
the handshake (`handshake_done`) and when it ends (`closed`). `NewUserBudget` is asked when a
decision would create a sticky entry for a user nobody has seen, so a flood of invented user
names from a few addresses cannot push real users' entries out of a table of `max_entries`.

Sources are client IP addresses; IPv6 clients are grouped by their /64, the block one host or
one customer usually gets (a single attacker can use billions of addresses inside it).
Per-source state lives only while it matters (open connections, or a bucket not yet refilled),
so the memory it takes is bounded by the connections and the recent sources, not by history.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

PRUNE_EVERY: Final = 4096  # admissions between sweeps of idle per-source state
NEW_USER_WINDOW_S: Final = 60.0  # new_users_per_source counts per minute


class Refusal(StrEnum):
    """Why a connection was refused before its handshake (a metric label and a log word)."""

    MAX_CONNECTIONS = "max-connections"
    MAX_HANDSHAKES = "max-handshakes"
    SOURCE_CONNECTIONS = "per-source-connections"
    SOURCE_RATE = "per-source-rate"
    NEW_USERS = "new-users-per-source"
    PER_USER = "per-user"  # after the Connection Request: the user's open connections ([limits] per_user_connections)


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """`[limits]`, already divided among the worker processes where it is enforced per process."""

    max_connections: int = 10_000
    max_handshakes: int = 1_000
    per_source_connections: int = 500
    per_source_rate: float = 50.0  # new connections per second, refilled continuously
    per_source_burst: int = 200  # bucket size: a logon storm behind one NAT address
    new_users_per_source: int = 300  # new sticky entries per source per minute


def source_of(host: str) -> str:
    """The key limits count by: the IPv4 address, or the /64 of an IPv6 address."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"


class _Bucket:
    """A token bucket: `rate` tokens per second up to `size`."""

    __slots__ = ("at", "tokens")

    def __init__(self, size: float, now: float) -> None:
        self.tokens = size
        self.at = now

    def take(self, rate: float, size: float, now: float) -> bool:
        self.refill(rate, size, now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def available(self, rate: float, size: float, now: float) -> float:
        """Tokens there would be at `now`, changing nothing."""
        return min(size, self.tokens + max(0.0, now - self.at) * rate)

    def refill(self, rate: float, size: float, now: float) -> None:
        if now > self.at:
            self.tokens = min(size, self.tokens + (now - self.at) * rate)
        self.at = now

    def full(self, rate: float, size: float, now: float) -> bool:
        self.refill(rate, size, now)
        return self.tokens >= size


class _Source:
    __slots__ = ("bucket", "open")

    def __init__(self, bucket: _Bucket) -> None:
        self.open = 0
        self.bucket = bucket


class Admission:
    """Connection limits at accept time, for one process."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.open = 0  # accepted and not yet closed
        self.handshaking = 0  # of those, still before their Connection Request
        self._sources: dict[str, _Source] = {}
        self._since_prune = 0

    def admit(self, source: str, now: float) -> Refusal | None:
        """None: admitted (counted as open and handshaking until told otherwise)."""
        s = self.settings
        if self.open >= s.max_connections:
            return Refusal.MAX_CONNECTIONS
        if self.handshaking >= s.max_handshakes:
            return Refusal.MAX_HANDSHAKES
        state = self._sources.get(source)
        if state is None:
            self._maybe_prune(now)
            state = self._sources[source] = _Source(_Bucket(s.per_source_burst, now))
        if state.open >= s.per_source_connections:
            return Refusal.SOURCE_CONNECTIONS
        if not state.bucket.take(s.per_source_rate, s.per_source_burst, now):
            return Refusal.SOURCE_RATE
        state.open += 1
        self.open += 1
        self.handshaking += 1
        return None

    def handshake_done(self) -> None:
        """The connection sent its Connection Request, or left before it (then `closed` follows)."""
        self.handshaking -= 1

    def closed(self, source: str) -> None:
        self.open -= 1
        state = self._sources.get(source)
        if state is not None:
            state.open -= 1

    def sources(self) -> int:
        """Per-source entries held now (bounded: see the module docstring)."""
        return len(self._sources)

    def reconfigure(self, settings: LimitSettings) -> None:
        self.settings = settings

    def _maybe_prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune < PRUNE_EVERY:
            return
        self._since_prune = 0
        s = self.settings
        idle = [k for k, v in self._sources.items()
                if v.open <= 0 and v.bucket.full(s.per_source_rate, s.per_source_burst, now)]
        for key in idle:
            del self._sources[key]


class NewUserBudget:
    """`new_users_per_source` new sticky entries per source per minute (a token bucket)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, _Bucket] = {}
        self._since_prune = 0

    def take(self, source: str, now: float) -> bool:
        rate, size = self.per_minute / NEW_USER_WINDOW_S, float(self.per_minute)
        bucket = self._buckets.get(source)
        if bucket is None:
            self._maybe_prune(now)
            bucket = self._buckets[source] = _Bucket(size, now)
        return bucket.take(rate, size, now)

    def allows(self, source: str, now: float) -> bool:
        """Whether `take` would succeed now, changing nothing (a preview)."""
        bucket = self._buckets.get(source)
        rate, size = self.per_minute / NEW_USER_WINDOW_S, float(self.per_minute)
        return bucket is None or bucket.available(rate, size, now) >= 1.0

    def sources(self) -> int:
        return len(self._buckets)

    def _maybe_prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune < PRUNE_EVERY:
            return
        self._since_prune = 0
        rate, size = self.per_minute / NEW_USER_WINDOW_S, float(self.per_minute)
        for key in [k for k, b in self._buckets.items() if b.full(rate, size, now)]:
            del self._buckets[key]
