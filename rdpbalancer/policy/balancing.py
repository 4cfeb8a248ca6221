"""Balancing algorithms: given a pool and each server's load, rank the servers best first.

Every algorithm implements the same small protocol (`rank`), in the spirit of HAProxy's
backend algorithm hooks; the load they see is chosen by the pool's `balance` setting:
open connections (leastconn) or homed users (leastsessions).

Weighted least-connections follows HAProxy: idle servers first, then the smallest
(load + 1) / weight; weight 0 takes no new users. Ties rotate, so equal servers share a burst
of new users evenly instead of the first one in the list taking them all.

A server in slow start (policy/slowstart.py) has only a share of its weight, and is not put
first for being idle: it just came back empty, and its ramped weight decides how many it gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from rdpbalancer.policy.model import PoolMember, Server


class Ranking(Protocol):
    """How a pool orders its servers for a new user (HAProxy: an algorithm behind the same hooks)."""

    def rank(self, members: Sequence[PoolMember], load: Callable[[str], int], turn: int,
             shares: Mapping[str, float] | None = None) -> list[Server]:
        """Servers that may take a new user, best first (weight-0 servers left out). `turn`
        breaks ties: the router advances it only for decisions it commits, so asking where
        a user would go (explain) never changes where the next one goes. `shares`: servers in
        slow start, and the fraction of their weight they have now."""
        ...


class WeightedLeastLoad:
    """Weighted least-load with rotating tie-break; the load function decides what "load" is."""

    def rank(self, members: Sequence[PoolMember], load: Callable[[str], int], turn: int,
             shares: Mapping[str, float] | None = None) -> list[Server]:
        n = len(members)
        if n == 0:
            return []
        turn %= n
        ramping = shares or {}

        def key(item: tuple[int, PoolMember]) -> tuple[bool, float, int]:
            index, member = item
            name = member.server.name
            current = load(name)
            part = ramping.get(name)
            if part is not None:
                return (True, (current + 1) / (member.weight * part), (index - turn) % n)
            return (current > 0, (current + 1) / member.weight, (index - turn) % n)

        eligible = [(i, m) for i, m in enumerate(members) if m.weight > 0]
        return [m.server for _, m in sorted(eligible, key=key)]
