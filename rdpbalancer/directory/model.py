"""Group membership as the router sees it: an immutable snapshot, replaced whole on each refresh."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from rdpbalancer.policy.identity import user_key

# Where the data came from: a live LDAP fetch, the on-disk copy of the last one, group files, the
# configuration; "none" while LDAP is configured but neither AD nor the cache has answered yet.
SnapshotSource = Literal["ldap", "cache", "files", "static", "none"]

_NO_GROUPS: frozenset[str] = frozenset()


def member_key(name: str | bytes) -> str | None:
    """The key of a directory or file user, the same as the balancer's key for a cookie of that name.

    `strip_domain=True` semantics (`CORP\\Alice`, `alice@corp.example` -> `alice`) whatever the
    balancer's own setting: directories hold bare account names. Bytes are decoded like a cookie.
    """
    raw = name if isinstance(name, bytes) else name.encode("utf-8")
    return user_key(raw, strip_domain=True)


def member_keys(names: Iterable[str | bytes]) -> frozenset[str]:
    return frozenset(key for key in map(member_key, names) if key is not None)


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    groups: Mapping[str, frozenset[str]]  # group name (as in the configuration) -> member user keys
    fetched_at: float  # wall-clock time the data was read at its source (survives restarts via the cache)
    source: SnapshotSource
    _by_user: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)
    _sorted_users: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        groups = MappingProxyType({name: frozenset(members) for name, members in self.groups.items()})
        by_user: dict[str, set[str]] = {}
        for name, members in groups.items():
            for user in members:
                by_user.setdefault(user, set()).add(name)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "_by_user", MappingProxyType({u: frozenset(g) for u, g in by_user.items()}))
        object.__setattr__(self, "_sorted_users", tuple(sorted(by_user)))

    @classmethod
    def empty(cls, fetched_at: float = 0.0, source: SnapshotSource = "none") -> GroupSnapshot:
        return cls(groups={}, fetched_at=fetched_at, source=source)

    def members(self, name: str) -> frozenset[str]:
        """Members of a group; an unknown group has none."""
        return self.groups.get(name, _NO_GROUPS)

    def groups_of(self, user_key: str) -> frozenset[str]:
        """Names of the groups `user_key` is in (transitively, for LDAP groups)."""
        return self._by_user.get(user_key, _NO_GROUPS)

    def users_with_prefix(self, prefix: str) -> list[str]:
        """Users (of any group) whose key starts with `prefix`, sorted: mstsc may send a truncated name."""
        users = self._sorted_users
        start = bisect.bisect_left(users, prefix)
        end = start
        while end < len(users) and users[end].startswith(prefix):
            end += 1
        return list(users[start:end])

    def sizes(self) -> dict[str, int]:
        return {name: len(members) for name, members in self.groups.items()}
