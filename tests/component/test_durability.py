"""Sticky assignments survive the balancer being killed with SIGKILL or stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.store.sqlite import LAZY_FLUSH_S, SqliteStickyStore
from tests.support.balancer import BalancerProcess, advance_clock, farm_config, running, stored, wait_until
from tests.support.fakes import rdp_connect, start_farm, where
from tests.support.storm import BURST_USERS, KILL_AFTER_CRS, kill_during_storm


@pytest.mark.slow
@pytest.mark.processes
async def test_kill_9_during_a_burst_loses_no_assignment(tmp_path: Path) -> None:
    before, after = await kill_during_storm(tmp_path)
    assert KILL_AFTER_CRS <= len(before) < BURST_USERS, "the kill did not land mid-burst"
    lost = {u: (before[u], after[u]) for u in before if after[u] != before[u]}
    assert not lost, f"{len(lost)} of {len(before)} users moved after kill -9: {list(lost.items())[:5]}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.processes
async def test_restart_keeps_users_and_open_sessions_count(tmp_path: Path, sig: signal.Signals) -> None:
    farm = await start_farm("TS01", "TS02")
    cfg = tmp_path / "rdpb.toml"
    cfg.write_text(farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "sticky.db"))
    proc = BalancerProcess(cfg, 0, tmp_path / "balancer.log")  # the port each start took, from its log
    await asyncio.to_thread(proc.start)
    try:
        port = proc.port
        held = await rdp_connect(port, "alice")  # alice stays connected across the restart
        bob = await where(port, "bob")
        code = await asyncio.to_thread(proc.signal, sig)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        await held.close()
        await asyncio.to_thread(proc.start)
        port = proc.port
        assert await where(port, "alice") == held.server
        assert await where(port, "bob") == bob
    finally:
        proc.stop()
        for s in farm:
            await s.stop()
    if sig == signal.SIGTERM:
        log = (tmp_path / "balancer.log").read_text()
        assert "SIGTERM received" in log and "stopped" in log


async def test_an_entry_that_expired_in_memory_leaves_the_file_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen expired by a routing lookup, an entry left the table but stayed in the SQLite file:
    a restart with a longer ttl brought the user back to a server they had left long ago."""
    farm = await start_farm("TS01", "TS02")
    db = tmp_path / "s.db"
    text = farm_config([(s.name, s.address, 1) for s in farm], db).replace('ttl = "8h"', 'ttl = "1s"')
    async with running(text) as bal:
        port = bal.addresses[0][1]
        await where(port, "alice")
        await wait_until(lambda: "alice" in stored(db), 5)
        await wait_until(lambda: not bal.ctx.sessions, 5)  # her session's end is her entry's last use
        advance_clock(monkeypatch, 1.2)  # past the ttl, on the process clock
        await where(port, "bob")  # ... and a lookup of alice now sees her expired:
        assert bal.table.get("alice", bal.clock()) is None
        bal.store.apply_later(bal.table.sweep(bal.clock()))  # what the sweeper does every 30 s
        await bal.store.barrier()  # type: ignore[attr-defined]
    assert "alice" not in stored(db)
    for s in farm:
        await s.stop()


# -- last_used refreshes: coalesced, never ahead of an assignment ---------------------------------

def _last_used(db: Path) -> dict[str, tuple[str, float]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return {k: (s, u) for k, s, u in conn.execute("SELECT key, server, last_used FROM sticky")}
    finally:
        conn.close()


async def _store(db: Path) -> SqliteStickyStore:
    store = SqliteStickyStore(db, sync="full")
    store.load()
    store.start(asyncio.get_running_loop())
    return store


async def test_a_refresh_is_written_with_the_next_assignment_and_before_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = await _store(db)
    try:
        table = StickyTable(ttl_s=3600, max_entries=100)
        await store.apply(table.assign("alice", "default", "TS01", 100.0))
        await store.apply(table.assign("bob", "default", "TS01", 100.0))
        entry = table.session_closed("alice", 200.0)
        assert entry is not None
        store.refresh_later(table.refreshed(entry))
        store.refresh_later(table.refreshed(entry))  # one row per user however many refreshes
        bob = table.session_closed("bob", 250.0)
        assert bob is not None
        store.refresh_later(table.refreshed(bob))
        assert _last_used(db)["alice"] == ("TS01", 100.0)  # waiting: no sync of its own
        # bob moves: his durable write carries alice's refresh, and his own older refresh is
        # written before it, so the move wins
        await store.apply(table.assign("bob", "default", "TS02", 300.0))
        assert _last_used(db) == {"alice": ("TS01", 200.0), "bob": ("TS02", 300.0)}
    finally:
        await store.close()


async def test_a_refresh_alone_reaches_the_disk_within_the_window_or_at_close(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = await _store(db)
    table = StickyTable(ttl_s=3600, max_entries=100)
    await store.apply(table.assign("alice", "default", "TS01", 100.0))
    await store.apply(table.assign("bob", "default", "TS01", 100.0))
    for key, now in (("alice", 200.0), ("bob", 210.0)):
        entry = table.session_closed(key, now)
        assert entry is not None
        store.refresh_later(table.refreshed(entry))
    await wait_until(lambda: _last_used(db)["alice"][1] == 200.0, LAZY_FLUSH_S + 5)
    entry = table.session_closed("alice", 300.0)
    assert entry is not None
    store.refresh_later(table.refreshed(entry))
    await store.close()  # stopping writes what waits
    assert _last_used(db) == {"alice": ("TS01", 300.0), "bob": ("TS01", 210.0)}


@pytest.mark.processes
async def test_kill_9_after_session_ends_loses_no_assignment(tmp_path: Path) -> None:
    """Refreshes waiting in memory when the process dies cost last_used, never an assignment:
    every user comes back to the server they were on."""
    farm = await start_farm("TS01", "TS02")
    cfg = tmp_path / "rdpb.toml"
    db = tmp_path / "sticky.db"
    cfg.write_text(farm_config([(s.name, s.address, 1) for s in farm], db))
    proc = BalancerProcess(cfg, 0, tmp_path / "balancer.log")  # the port each start took, from its log
    await asyncio.to_thread(proc.start)
    try:
        port = proc.port
        placed = {f"u{i}": await where(port, f"u{i}") for i in range(20)}
        again = {user: await where(port, user) for user in placed}  # returning: refreshes only
        assert again == placed
        await asyncio.to_thread(proc.signal, signal.SIGKILL)
        assert stored(db) == placed
        await asyncio.to_thread(proc.start)
        assert {user: await where(proc.port, user) for user in placed} == placed
    finally:
        proc.stop()
        for s in farm:
            await s.stop()


# -- group commit window ---------------------------------------------------------------------------

async def test_new_users_back_to_back_share_a_commit_and_a_quiet_write_goes_at_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SqliteStickyStore(db, sync="full", commit_window_s=0.05)
    store.load()
    store.start(asyncio.get_running_loop())
    table = StickyTable(ttl_s=3600, max_entries=100)
    try:
        await store.apply(table.assign("first", "default", "TS01", 100.0))  # quiet before: at once
        commits = store.commits
        loop = asyncio.get_running_loop()
        arrived: list[float] = []

        async def arrive(i: int) -> None:
            await asyncio.sleep(0.002 * i)  # ten new users, one every 2 ms
            arrived.append(loop.time())
            await store.apply(table.assign(f"u{i}", "default", "TS01", 100.0))

        await asyncio.gather(*(arrive(i) for i in range(10)))
        # Hand-overs to the writer are at least a window apart, and the last comes at most a window
        # after the last arrival: one group, two if the first came after the window (arrivals 2 ms
        # apart on time), one more per window the arrivals were spread over by a slow scheduler.
        # (The loop clock counts whole milliseconds: a window is at least 49 of them.)
        allowed = 2 + int((arrived[-1] - arrived[0]) / (store.commit_window_s - 0.001))
        assert store.commits - commits <= allowed, (store.commits - commits, allowed)
        assert len(stored(db)) == 11  # and every one was durable when its apply returned

        await asyncio.sleep(0.1)  # quiet for longer than the window
        write = store.apply(table.assign("late", "default", "TS01", 100.0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert store._pending == []  # handed to the writer in the same pass, not held for the window
        await write
    finally:
        await store.close()


def test_commit_window_is_validated_with_the_bad_value_named() -> None:
    from rdpbalancer.config.schema import StickySection  # noqa: PLC0415

    assert StickySection().commit_window == 0.003
    assert StickySection(commit_window="0ms").commit_window == 0.0
    for bad, said in (("1s", "at most 50ms"), (5, "write the unit"), ("-1ms", "invalid duration")):
        with pytest.raises(ValueError, match=said):
            StickySection(commit_window=bad)
