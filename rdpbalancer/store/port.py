"""What the running balancer needs of its sticky store and, with several nodes, of the cluster:
two ports, so the shell holds "a store" and "a cluster channel or none", never a type check.

`StickyStorePort` extends the policy core's `StickyStore` (load, apply, apply_later, close) with
the shell's needs: start, barrier, watch (a handoff's journal), lookup (a shared store's word
before routing) and a health read model for /healthz and the metrics.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rdpbalancer.policy.ports import StickyStore
from rdpbalancer.policy.sticky import StickyEntry


class StickyStorePort(StickyStore, Protocol):
    path: Path  # the SQLite file (a shared store's local copy)
    shared: bool  # other balancer nodes write it too (Redis)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing (after `load`, before the first `apply`)."""
        ...

    def set_commit_window(self, seconds: float) -> None:
        """[sticky] commit_window (group commit of the local file), at start and on reload."""
        ...

    async def lookup(self, key: str) -> tuple[bool, StickyEntry | None]:
        """(True, the entry or None) when the store is an authority beyond this process and
        answered; (False, None) otherwise: the node's own table decides."""
        ...

    # -- health read model ----------------------------------------------------------------------

    @property
    def unsaved(self) -> int:
        """Changes not yet durable because writing failed (0 when healthy)."""
        ...

    @property
    def commits(self) -> int: ...

    @property
    def failures(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def available(self) -> bool | None:
        """A shared store: whether it answers (None until its first answer); else None."""
        ...

    @property
    def conflicts(self) -> int:
        """Assignments another node made differently (a shared store's outage); else 0."""
        ...


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the other nodes publish: their connections per server, and the shared admin settings."""

    others: dict[str, int]
    admin_states: dict[str, str]
    weights: dict[str, int]


class ClusterChannel(Protocol):
    """The nodes sharing one table: session counts, shared admin settings, the change feed."""

    async def exchange(self, node: str, counts: dict[str, int], expire_s: float) -> ClusterView | None:
        """Publish this node's connections per server, read the others'; None while away."""
        ...

    async def pull(self) -> list[tuple[str, StickyEntry | None]] | None:
        """Users written or deleted anywhere since the last pull, with their entry now."""
        ...

    async def share(self, setting: str, server: str, value: str) -> None:
        """An administrator's setting ("admin" or "weight") for every node (best effort)."""
        ...

    async def leave(self, node: str) -> None: ...
