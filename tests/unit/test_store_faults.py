"""The SQLite store when the disk refuses writes: routing goes on, nothing is lost once it recovers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from rdpbalancer.policy.sticky import Change, StickyEntry
from rdpbalancer.store import sqlite as store_module
from rdpbalancer.store.sqlite import SqliteStickyStore


def entry(key: str, server: str = "TS01") -> StickyEntry:
    return StickyEntry(key, "default", server, 1.0, 1.0)


async def test_failed_writes_are_kept_and_saved_when_the_disk_recovers(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "RETRY_UNSAVED_S", 0.05)
    store = SqliteStickyStore(tmp_path / "s.db", sync="normal")
    store.load()
    store.start(asyncio.get_running_loop())
    real_commit = store._commit
    broken = True

    def flaky(conn: sqlite3.Connection, batch: list) -> None:  # type: ignore[type-arg]
        if broken:
            raise sqlite3.OperationalError("database or disk is full")
        real_commit(conn, batch)

    monkeypatch.setattr(store, "_commit", flaky)
    await asyncio.wait_for(store.apply(Change(put=(entry("alice"), entry("bob")))), 5)  # does not hang
    await asyncio.wait_for(store.apply(Change(delete=("bob",))), 5)
    assert store.unsaved == 2 and store.failures == 2 and "disk is full" in (store.last_error or "")
    broken = False
    for _ in range(200):  # the retry timer saves them without any new change
        if store.unsaved == 0:
            break
        await asyncio.sleep(0.02)
    assert store.unsaved == 0
    await store.close()
    assert {(e.key, e.server) for e in SqliteStickyStore(tmp_path / "s.db").read_only()} == {("alice", "TS01")}


async def test_a_long_outage_keeps_one_change_per_user_and_logs_once_a_minute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(store_module, "RETRY_UNSAVED_S", 0.01)
    store = SqliteStickyStore(tmp_path / "s.db", sync="normal")
    store.load()
    store.start(asyncio.get_running_loop())
    broken = True
    real_commit = store._commit

    def flaky(conn: sqlite3.Connection, batch: list) -> None:  # type: ignore[type-arg]
        if broken:
            raise sqlite3.OperationalError("disk I/O error")
        real_commit(conn, batch)

    monkeypatch.setattr(store, "_commit", flaky)
    for round_ in range(50):  # 50 rounds of changes to the same 20 users: 20 kept, not 1,000
        await store.apply(Change(put=tuple(StickyEntry(f"u{i}", "default", f"TS0{round_ % 3}", 1.0, float(round_))
                                           for i in range(20))))
    await store.apply(Change(delete=("u0",)))
    assert store.unsaved == 20
    assert caplog.text.count("sticky table write to") == 1  # the first failure; the next a minute later
    broken = False
    for _ in range(200):
        if store.unsaved == 0:
            break
        await asyncio.sleep(0.02)
    await store.close()
    saved = {e.key: e.server for e in SqliteStickyStore(tmp_path / "s.db").read_only()}
    assert saved == {f"u{i}": "TS01" for i in range(1, 20)}  # round 49: TS0(49 % 3) = TS01; u0 deleted
