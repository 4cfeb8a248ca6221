from rdpbalancer.policy.sticky import StickyEntry, StickyTable

HOUR = 3600.0


def table(ttl: float = 8 * HOUR, size: int = 100) -> StickyTable:
    return StickyTable(ttl_s=ttl, max_entries=size)


def test_assign_and_get() -> None:
    t = table()
    change = t.assign("alice", "default", "TS01", now=1000.0)
    assert [e.key for e in change.put] == ["alice"]
    entry = t.get("alice", 1001.0)
    assert entry is not None and entry.server == "TS01" and entry.created == 1000.0
    assert t.homed("TS01") == 1


def test_expiry_counts_from_end_of_last_connection() -> None:
    t = table(ttl=100.0)
    t.assign("alice", "p", "TS01", now=0.0)
    t.session_opened("alice", now=0.0)
    # connected far longer than the ttl: never expires while the session is open
    assert t.get("alice", 10_000.0) is not None
    t.session_closed("alice", now=10_000.0)
    assert t.get("alice", 10_099.0) is not None
    assert t.get("alice", 10_100.0) is None
    assert t.homed("TS01") == 0 and len(t) == 0


def test_two_open_sessions_need_two_closes() -> None:
    t = table(ttl=10.0)
    t.assign("alice", "p", "TS01", now=0.0)
    t.session_opened("alice", 0.0)
    t.session_opened("alice", 1.0)
    t.session_closed("alice", 2.0)
    assert t.get("alice", 50.0) is not None
    t.session_closed("alice", 50.0)
    assert t.get("alice", 61.0) is None


def test_lru_eviction_spares_open_sessions() -> None:
    t = table(size=3)
    for i, user in enumerate(["a", "b", "c"]):
        t.assign(user, "p", "TS01", now=float(i))
    t.session_opened("a", now=3.0)  # a is in use now: most recently used
    t.get("b", 4.0)  # a read is not a use
    change = t.assign("d", "p", "TS02", now=5.0)
    assert change.dropped == ("b",)
    assert sorted(e.key for e in t) == ["a", "c", "d"]
    assert t.evictions == 1


def test_eviction_skips_active_entries_at_the_front() -> None:
    t = table(size=2)
    t.assign("a", "p", "S", 0.0)
    t.session_opened("a", 0.0)  # a is connected, and the least recently used
    t.assign("b", "p", "S", 1.0)
    change = t.assign("c", "p", "S", 2.0)
    assert change.dropped == ("b",)
    assert sorted(e.key for e in t) == ["a", "c"]


def test_reassign_moves_homed_count() -> None:
    t = table()
    t.assign("alice", "p", "TS01", 0.0)
    t.assign("alice", "p", "TS02", 10.0)
    assert t.homed("TS01") == 0 and t.homed("TS02") == 1
    entry = t.get("alice", 11.0)
    assert entry is not None and entry.created == 10.0


def test_load_skips_expired_and_trims_to_size() -> None:
    t = table(ttl=100.0, size=2)
    entries = [
        StickyEntry("old", "p", "S1", 0.0, 0.0),
        StickyEntry("a", "p", "S1", 0.0, 150.0),
        StickyEntry("b", "p", "S2", 0.0, 160.0),
        StickyEntry("c", "p", "S2", 0.0, 170.0),
    ]
    change = t.load(entries, now=200.0)
    assert set(change.dropped) == {"old", "a"}
    assert sorted(e.key for e in t) == ["b", "c"]


def test_sweep_expires_and_refreshes_open_sessions() -> None:
    t = table(ttl=100.0)
    t.assign("gone", "p", "S", 0.0)
    t.assign("busy", "p", "S", 0.0)
    t.session_opened("busy", 0.0)
    change = t.sweep(now=500.0)
    assert change.dropped == ("gone",)
    assert [(e.key, e.last_used) for e in change.put] == [("busy", 500.0)]


def test_delete_server() -> None:
    t = table()
    t.assign("a", "p", "S1", 0.0)
    t.assign("b", "p", "S2", 0.0)
    assert t.delete_server("S1").delete == ("a",)
    assert t.homed("S1") == 0 and len(t) == 1


def test_an_entry_expired_on_sight_is_deleted_from_storage_by_the_next_sweep() -> None:
    """`get` drops an expired entry from memory; it used to stay in the file, so a restart with
    a longer ttl brought it back."""
    t = StickyTable(ttl_s=100, max_entries=10)
    t.assign("alice", "p", "TS01", now=0.0)
    t.assign("bob", "p", "TS01", now=0.0)
    assert t.get("alice", now=500.0) is None  # expired, seen
    t.assign("bob", "p", "TS02", now=500.0)
    assert t.get("bob", now=500.0) is not None
    change = t.sweep(now=501.0)
    assert "alice" in change.dropped and "bob" not in change.dropped
    assert t.sweep(now=502.0).dropped == ()  # reported once
