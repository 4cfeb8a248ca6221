"""GroupSnapshot: membership lookups, reverse index, prefix search for truncated cookies."""

from __future__ import annotations

import dataclasses

import pytest

from rdpbalancer.directory.model import GroupSnapshot, member_key, member_keys
from rdpbalancer.policy.identity import user_key

SNAPSHOT = GroupSnapshot(
    groups={
        "Sales": frozenset({"carol", "dave"}),
        "Sales-EMEA": frozenset({"dave"}),
        "Accounting": frozenset({"alice", "alexander.hamilton"}),
        "Empty": frozenset(),
    },
    fetched_at=100.0,
    source="ldap",
)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Alice", "alice"),
        ("CORP\\Alice", "alice"),
        ("alice@corp.example", "alice"),
        ("  José ", "josé"),
        (b"Jos\xe9", "josé"),  # Windows-1252 bytes, as mstsc sends them
        ("CORP\\", None),
        ("", None),
    ],
)
def test_member_key_is_the_balancers_key(name: str | bytes, key: str | None) -> None:
    assert member_key(name) == key
    raw = name if isinstance(name, bytes) else name.encode()
    assert member_key(name) == user_key(raw, strip_domain=True)


def test_member_keys_drops_empty_names() -> None:
    assert member_keys(["Bob", "CORP\\", "bob@corp"]) == {"bob"}


def test_members_and_groups_of() -> None:
    assert SNAPSHOT.members("Sales") == {"carol", "dave"}
    assert SNAPSHOT.members("Nope") == frozenset()
    assert SNAPSHOT.groups_of("dave") == {"Sales", "Sales-EMEA"}
    assert SNAPSHOT.groups_of("mallory") == frozenset()


@pytest.mark.parametrize(
    ("prefix", "users"),
    [
        ("alexander", ["alexander.hamilton"]),  # mstsc sends the first 9 characters
        ("al", ["alexander.hamilton", "alice"]),
        ("alice", ["alice"]),
        ("alicia", []),
        ("zzz", []),
        ("", ["alexander.hamilton", "alice", "carol", "dave"]),
    ],
)
def test_users_with_prefix(prefix: str, users: list[str]) -> None:
    assert SNAPSHOT.users_with_prefix(prefix) == users


def test_sizes() -> None:
    assert SNAPSHOT.sizes() == {"Sales": 2, "Sales-EMEA": 1, "Accounting": 2, "Empty": 0}


def test_snapshot_is_immutable_and_detached_from_its_input() -> None:
    groups = {"Sales": {"carol"}}
    snapshot = GroupSnapshot(groups=groups, fetched_at=1.0, source="static")  # type: ignore[arg-type]
    groups["Sales"].add("mallory")
    groups["Other"] = {"x"}
    assert snapshot.groups == {"Sales": {"carol"}}
    with pytest.raises(TypeError):
        snapshot.groups["Sales"] = frozenset()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.source = "ldap"  # type: ignore[misc]


def test_empty_snapshot() -> None:
    empty = GroupSnapshot.empty()
    assert empty.source == "none"
    assert empty.users_with_prefix("") == []
