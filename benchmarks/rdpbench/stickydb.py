"""A sticky-table file with many entries, written straight into SQLite (scenario S1M).

The schema is rdpbalancer's own (rdpbalancer/store/sqlite.py). Every entry names the benchmark
pool and one of its servers, and was last used now, so none of them has expired at start-up.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from rdpbalancer.store.sqlite import SCHEMA  # the product's own table: the benchmark file cannot drift

BATCH_ROWS = 50_000


def _rows(entries: int, pool: str, servers: list[str], now: float) -> Iterator[tuple[str, str, str, float, float]]:
    for i in range(entries):
        yield f"user{i:07d}", pool, servers[i % len(servers)], now - 3600.0, now


def write(path: Path, entries: int, pool: str, servers: list[str]) -> None:
    """A new sticky file at path with `entries` users spread over `servers`."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # what rdpbalancer sets; avoids a conversion at start
        conn.execute("PRAGMA synchronous = OFF")  # a benchmark fixture: speed, not durability
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO sticky VALUES (?, ?, ?, ?, ?)", _rows(entries, pool, servers, time.time()))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def fresh_copy(source: Path, dest: Path) -> Path:
    """A copy the balancer may change (it updates and evicts entries) without touching the source."""
    shutil.copyfile(source, dest)
    return dest
