"""What a Redis sticky store keeps while Redis is away, per user: the latest change, and the
servers Redis may hold for it to be replayed as the queued changes would have been written
online (no Redis here: the store never reaches it; tests/ha/test_redis_replay.py replays)."""

from __future__ import annotations

from pathlib import Path

from rdpbalancer.policy.sticky import Change, StickyEntry
from rdpbalancer.store.redis import RedisSettings, RedisStickyStore
from rdpbalancer.store.sqlite import SqliteStickyStore


def offline(tmp_path: Path) -> RedisStickyStore:
    store = RedisStickyStore(RedisSettings(url="redis://127.0.0.1:1/0"), ttl_s=3600,
                             local=SqliteStickyStore(tmp_path / "local.db"))
    store.available = False  # as after a failed write: changes are kept
    return store


def put(server: str, prior: str | None = None, *, force: bool = False) -> Change:
    entry = StickyEntry("alice", "default", server, 1.0, 1.0)
    return Change(put=(entry,), prior=() if prior is None else (("alice", prior),), force=force)


def delete(prior: str | None = None, *, force: bool = False) -> Change:
    return Change(delete=("alice",), prior=() if prior is None else (("alice", prior),), force=force)


async def kept(tmp_path: Path, *changes: Change) -> tuple[str | None, tuple[str, ...]]:
    store = offline(tmp_path)
    for change in changes:
        await store._shared(change)
    queued = store._outbox["alice"]
    return (None if queued.entry is None else queued.entry.server), queued.priors


async def test_a_deletion_is_kept_with_the_server_the_node_believed(tmp_path: Path) -> None:
    assert await kept(tmp_path, delete("TS02")) == (None, ("TS02",))


async def test_coalesced_changes_keep_the_first_prior_and_the_servers_written_since(tmp_path: Path) -> None:
    # moved TS02 -> TS03, then TS03 removed: Redis still holds TS02 (or TS03 if another node did the same)
    assert await kept(tmp_path, put("TS03", "TS02"), delete("TS03")) == (None, ("TS02", "TS03"))
    # placed while offline (Redis held none as far as this node knew), then every connect failed
    assert await kept(tmp_path, put("TS01"), delete("TS01")) == (None, ("", "TS01"))
    # a refresh of the same server adds nothing
    assert await kept(tmp_path, put("TS03", "TS02"), put("TS03", "TS03"), delete("TS03")) == (None, ("TS02", "TS03"))
    # deleted, placed again, deleted again
    assert await kept(tmp_path, delete("TS02"), put("TS01", ""), delete("TS01")) == (None, ("TS02", "", "TS01"))


async def test_a_forced_change_makes_the_coalesced_write_unconditional(tmp_path: Path) -> None:
    assert await kept(tmp_path, delete(force=True)) == (None, ("*",))
    assert await kept(tmp_path, put("TS01", force=True), delete("TS01")) == (None, ("*",))
    assert await kept(tmp_path, delete("TS02"), put("TS03", force=True)) == ("TS03", ("*",))


async def test_dropped_entries_are_not_kept_for_redis(tmp_path: Path) -> None:
    """Expired or evicted here: Redis expires them itself, so nothing is queued to delete there."""
    store = offline(tmp_path)
    await store._shared(Change(dropped=("alice", "bob")))
    assert not store._outbox
