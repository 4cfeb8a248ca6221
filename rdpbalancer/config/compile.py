"""Compile a validated `Config` into the immutable objects the running balancer uses.

Reload builds a complete new set of these beside the old ones and swaps references; nothing
here mutates running state.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdpbalancer.config.schema import Config
from rdpbalancer.policy.engine import RoutingPolicy
from rdpbalancer.policy.model import BalanceKind, NoCookiePolicy, Pool, PoolMember, Server
from rdpbalancer.relay.context import RelaySettings


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    policy: RoutingPolicy
    relay: RelaySettings
    listen: tuple[tuple[str, int], ...]


def compile_config(config: Config) -> Snapshot:
    servers: dict[str, Server] = {}
    pools = []
    for pool in config.pools:
        members = []
        for sc in pool.servers:
            server = servers.setdefault(sc.name, Server(sc.name, sc.address.host, sc.address.port))
            members.append(PoolMember(server, sc.weight))
        pools.append(Pool(pool.name, BalanceKind(pool.balance), tuple(members)))
    b = config.balancer
    policy = RoutingPolicy(
        pools=tuple(pools),
        no_cookie=NoCookiePolicy(b.no_cookie),
        max_connect_attempts=b.max_connect_attempts,
    )
    relay = RelaySettings(
        handshake_timeout_s=b.handshake_timeout,
        connect_timeout_s=b.connect_timeout,
        strip_domain=config.identity.strip_domain,
    )
    return Snapshot(config, policy, relay, tuple((a.host, a.port) for a in b.listen))
