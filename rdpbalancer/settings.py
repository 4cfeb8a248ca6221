"""What the relay shell needs of the configuration, compiled by config/compile.py and swapped
whole on reload: plain values (no pydantic: worker processes import this, not the config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from rdpbalancer.policy.limits import LimitSettings


@dataclass(frozen=True, slots=True)
class RelaySettings:
    handshake_timeout_s: float = 5.0  # time for the client to send its Connection Request
    connect_timeout_s: float = 4.0  # overall budget to reach a backend, all attempts included
    strip_domain: bool = True
    splice: bool = False  # relay with os.splice instead of copying through Python
    limits: LimitSettings = field(default_factory=LimitSettings)  # this process's share of [limits]
    proxy_listeners: frozenset[str] = frozenset()  # listener names whose clients send a PROXY header first
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    processes: int = 1  # the primary and its workers: they share the service user's pipe budget
    transparent: frozenset[str] = frozenset()  # servers connected to from the client's address
