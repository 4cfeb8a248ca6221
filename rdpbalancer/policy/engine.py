"""The router: `decide(request, now) -> Decision`, the single place routing happens.

Pure: no I/O, no asyncio; the shell calls `decide`, then applies it with `assign` (remember the
user's server) and `opened`/`closed` (connection counts) with no `await` in between, so two
connections of one new user arriving together agree on one server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rdpbalancer.policy.balancing import Balancer, WeightedLeastLoad
from rdpbalancer.policy.identity import printable, source_ip_key
from rdpbalancer.policy.model import (
    BalanceKind,
    Decision,
    NoCookiePolicy,
    Pool,
    Reason,
    RouteRequest,
    Server,
)
from rdpbalancer.policy.sticky import Change, StickyTable


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The compiled, immutable part of the configuration the router needs."""

    pools: tuple[Pool, ...]
    no_cookie: NoCookiePolicy = NoCookiePolicy.SOURCE_IP
    max_connect_attempts: int = 3

    def servers(self) -> dict[str, Server]:
        return {m.server.name: m.server for p in self.pools for m in p.members}


class Router:
    def __init__(self, policy: RoutingPolicy, table: StickyTable) -> None:
        self.table = table
        self.connections: Counter[str] = Counter()  # server name -> open or opening connections
        self._balancers: dict[str, Balancer] = {}
        self.policy = policy
        self.swap_policy(policy)

    def swap_policy(self, policy: RoutingPolicy) -> None:
        """Install a new policy (reload); sessions already relaying keep their decision."""
        self.policy = policy
        self._balancers = {p.name: self._balancers.get(p.name) or WeightedLeastLoad() for p in policy.pools}

    # -- deciding -------------------------------------------------------------------------

    def decide(self, request: RouteRequest, now: float) -> Decision:
        if request.msts_target is not None:
            token = self._by_token(request.msts_target)
            if token is not None:
                return token
        pool = self.policy.pools[0]  # until routing rules exist, the first pool serves everyone
        key = request.user_key
        if key is None:
            if self.policy.no_cookie is NoCookiePolicy.REJECT:
                return Decision(Reason.DENIED, detail="no cookie and no_cookie = reject")
            if self.policy.no_cookie is NoCookiePolicy.BALANCE:
                return self._balance(pool, None, Reason.NO_COOKIE)
            key = source_ip_key(request.client_host)
        entry = self.table.get(key, now)
        if entry is not None and entry.pool == pool.name:
            member = pool.member(entry.server)
            if member is not None:
                return Decision(
                    Reason.STICKY_HIT, key, pool.name, (member.server,), f"{printable(key)} -> {entry.server}"
                )
        return self._balance(pool, key, Reason.NEW)

    def _balance(self, pool: Pool, key: str | None, reason: Reason) -> Decision:
        ranked = self._balancers[pool.name].rank(pool.members, self._load_function(pool))
        if not ranked:
            return Decision(Reason.NO_SERVER, key, pool.name, detail=f"no server of pool {pool.name} takes users")
        attempts = tuple(ranked[: self.policy.max_connect_attempts])
        return Decision(reason, key, pool.name, attempts, f"{pool.balance} picked {attempts[0].name}")

    def _load_function(self, pool: Pool) -> Callable[[str], int]:
        if pool.balance is BalanceKind.LEASTSESSIONS:
            return self.table.homed
        return self.connections.__getitem__

    def _by_token(self, target: tuple[str, int]) -> Decision | None:
        for pool in self.policy.pools:
            for member in pool.members:
                if (member.server.host, member.server.port) == target:
                    return Decision(Reason.ROUTING_TOKEN, None, pool.name, (member.server,), "msts token")
        return None

    # -- applying ---------------------------------------------------------------------------

    def assign(self, decision: Decision, server: Server, now: float) -> Change:
        """Remember that the decision's user now lives on `server` (no-op if not remembered)."""
        if decision.sticky_key is None or decision.pool is None:
            return Change()
        current = self.table.get(decision.sticky_key, now)
        if current is not None and current.server == server.name and current.pool == decision.pool:
            return Change()
        return self.table.assign(decision.sticky_key, decision.pool, server.name, now)

    def opened(self, server: Server) -> None:
        self.connections[server.name] += 1

    def closed(self, server: Server) -> None:
        self.connections[server.name] -= 1
        if self.connections[server.name] <= 0:
            del self.connections[server.name]
