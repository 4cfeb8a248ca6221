"""Ports: what the policy core needs from the outside world, as Protocols.

Adapters (`rdpbalancer.store.*`) implement these; the policy core never imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from rdpbalancer.policy.sticky import Change, StickyEntry


class StickyStore(Protocol):
    """Durable storage behind the in-memory sticky table."""

    def load(self) -> Sequence[StickyEntry]:
        """Every stored entry (called once at start, before the listeners open)."""
        ...

    def apply(self, change: Change) -> Awaitable[Sequence[StickyEntry]]:
        """Persist `change`; resolves once it is durable (the caller forwards bytes after).
        A store may answer with an asyncio Future, which callers may chain without a task.

        A store shared by several balancers may hold a newer decision for some of the users
        (see `Change.prior`): those entries are returned, and the caller adopts them.
        """
        ...

    def apply_later(self, change: Change) -> None:
        """Persist `change` in the background (bookkeeping such as last_used refreshes)."""
        ...

    def refresh_later(self, change: Change) -> None:
        """Persist a refresh of last_used (`StickyTable.refreshed`): it may be coalesced and
        written up to a few seconds later, but always before any later change is written."""
        ...

    async def barrier(self) -> None:
        """Returns once every change handed over before it is written (or kept as unsaved)."""
        ...

    def watch(self, watcher: Callable[[Change], None] | None) -> None:
        """Tell `watcher` each change as it is handed over, in order; None stops it."""
        ...

    async def close(self) -> None:
        """Flush what is pending and release the storage."""
        ...


class GroupMembership(Protocol):
    """Group membership as the directory last saw it (an immutable snapshot)."""

    def groups_of(self, user_key: str) -> frozenset[str]:
        """The configured group names `user_key` belongs to (transitively)."""
        ...

    def users_with_prefix(self, prefix: str) -> Sequence[str]:
        """Known user keys starting with `prefix` (for truncated cookies)."""
        ...


class NoGroups:
    """Membership before any directory answered: nobody is in any group."""

    def groups_of(self, user_key: str) -> frozenset[str]:
        return frozenset()

    def users_with_prefix(self, prefix: str) -> Sequence[str]:
        return ()
