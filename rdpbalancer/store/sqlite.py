"""SQLite sticky store: one file, WAL journal, group commit from a writer thread.

Why a thread: sqlite3 blocks, and the event loop must never wait on the disk. Every change is
queued with an asyncio future; the writer takes everything queued so far, commits it in one
transaction and resolves all of their futures at once (group commit), so a burst of new users
costs one sync, not one each.

Durability: `apply()` returns once the transaction is committed. With `sync = "full"` that
survives power loss; with "normal" (WAL) it survives the process being killed, not the machine.
A failing disk is logged and counted but never stops routing: the in-memory table stays
authoritative, and the failed change is reported through `last_error`.

Group commit window (`[sticky] commit_window`, default 3 ms): while writes come back to back, a
hand-over to the writer waits until `commit_window` after the previous one, so a burst of new
users shares one transaction and one sync instead of waking the writer (and taking the GIL from
the event loop) for each; a write after a quiet moment is handed over at once. The cost is at
most that window on the first connection of a new user, only under load.

Refreshes (`refresh_later`: the new last_used of a user whose session ended) are not worth a
sync each: they are kept, one per user, and written with the next change or at most
`LAZY_FLUSH_S` later, always before that next change. A crash loses at most that much of
last_used, never an assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rdpbalancer.policy.sticky import Change, StickyEntry
from rdpbalancer.store import StoreError

log = logging.getLogger("rdpbalancer.store")

MAX_BATCH_CHANGES = 2048  # changes per transaction: bounds one commit's latency under a storm
RETRY_UNSAVED_S = 5.0  # after a failed write (disk full, read-only file), try again this often
LAZY_FLUSH_S = 2.0  # a refresh of last_used is on disk at most this long after it was made
BUSY_TIMEOUT_MS = 5000  # wait for another process's lock (a worker, or a handoff successor)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sticky (
    key       TEXT PRIMARY KEY,
    pool      TEXT NOT NULL,
    server    TEXT NOT NULL,
    created   REAL NOT NULL,
    last_used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sticky_server ON sticky(server);
"""
_UPSERT = (
    "INSERT INTO sticky(key, pool, server, created, last_used) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET pool=excluded.pool, server=excluded.server, "
    "created=excluded.created, last_used=excluded.last_used"
)
ROWS_PER_STATEMENT = 500  # rows per multi-row statement (5 values each: far below SQLite's limit)


def _upsert_many(count: int) -> str:
    return _UPSERT.replace("VALUES (?, ?, ?, ?, ?)", "VALUES " + ",".join(["(?,?,?,?,?)"] * count))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]

Row = tuple[str, str, str, float, float]
FAILURE_LOG_EVERY_S = 60.0  # while the disk keeps refusing, one error line a minute (the first at once)
_Item = tuple[list[Row], list[str], "asyncio.Future[Any] | None"]
_STOP = object()


def _connect(path: Path, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'FULL' if sync == 'full' else 'NORMAL'}")
    return conn


def _rows(change: Change) -> list[Row]:
    return [(e.key, e.pool, e.server, e.created, e.last_used) for e in change.put]


class SqliteStickyStore:
    def __init__(self, path: str | Path, *, sync: str = "full", commit_window_s: float = 0.0) -> None:
        self.path = Path(path)
        self.sync = sync
        self.commit_window_s = commit_window_s
        self._handed_at = -math.inf  # loop time of the last hand-over to the writer
        self.commits = 0
        self.failures = 0
        self.last_error: str | None = None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()  # lists of _Item, or _STOP
        self._pending: list[_Item] = []  # queued during this pass of the event loop
        # changes whose commit failed, oldest first: written again (before newer ones) once the
        # disk accepts writes, so a disk-full episode loses nothing the table still holds
        # key -> its latest row (None: deleted) not yet on disk: one per user however many changes
        # an outage saw, so memory and each retry stay bounded by the table, not by the traffic
        self._unsaved: dict[str, Row | None] = {}
        self._failing_since_log = 0  # failed writes not logged yet (one line a minute while failing)
        self._failure_logged_at = 0.0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: Callable[[Change], None] | None = None
        self._lazy: dict[str, Row] = {}  # last_used refreshes not handed to the writer yet
        self._lazy_timer: asyncio.TimerHandle | None = None

    # -- start ------------------------------------------------------------------------------

    def load(self) -> Sequence[StickyEntry]:
        """Create the file if needed and read every entry. Raises StoreError with the path."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            conn = _connect(self.path, self.sync)
            try:
                conn.executescript(SCHEMA)
                rows = conn.execute("SELECT key, pool, server, created, last_used FROM sticky").fetchall()
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open sticky table {self.path}: {exc}") from exc
        return [StickyEntry(k, p, s, c, u) for k, p, s, c, u in rows]

    def read_only(self) -> Sequence[StickyEntry]:
        """Every stored entry, without creating or changing anything (for `explain`)."""
        if not self.path.exists():
            return []
        try:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                rows = conn.execute("SELECT key, pool, server, created, last_used FROM sticky").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read sticky table {self.path}: {exc}") from exc
        return [StickyEntry(k, p, s, c, u) for k, p, s, c, u in rows]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._writer, name="sticky-writer", daemon=True)
        self._thread.start()

    # -- changes ----------------------------------------------------------------------------

    def watch(self, watcher: Callable[[Change], None] | None) -> None:
        """Tell `watcher` every change as it is handed to this store, in order (a handoff passes
        them on to the successor: it must not miss a deletion or a late assignment); None: stop."""
        self._watcher = watcher

    def apply(self, change: Change) -> asyncio.Future[Sequence[StickyEntry]]:
        """A future that resolves once durable, to (): one file, one writer, never a conflict.
        (A future, not a coroutine: the caller chains it without a task of its own.)"""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[Sequence[StickyEntry]] = self._loop.create_future()
        if not change.put and not change.delete and not change.dropped:
            future.set_result(())
            return future
        if self._watcher is not None:
            self._watcher(change)
        self._enqueue((_rows(change), [*change.delete, *change.dropped], future))
        return future

    async def barrier(self) -> None:
        """Returns once every change queued before it is written (or kept as unsaved)."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        self._enqueue(([], [], future))
        await future

    def apply_later(self, change: Change) -> None:
        if change.put or change.delete or change.dropped:
            if self._watcher is not None:
                self._watcher(change)
            self._enqueue((_rows(change), [*change.delete, *change.dropped], None))

    def refresh_later(self, change: Change) -> None:
        """Like `apply_later`, for refreshes of last_used: coalesced per user, and written with
        the next change or within LAZY_FLUSH_S, whichever comes first (never after it)."""
        if not change.put:
            return
        if self._watcher is not None:
            self._watcher(change)
        for row in _rows(change):
            self._lazy[row[0]] = row
        if self._loop is None or not self._loop.is_running():
            self._flush_lazy()  # no loop to wait in (start-up, shutdown)
        elif self._lazy_timer is None:
            self._lazy_timer = self._loop.call_later(LAZY_FLUSH_S, self._flush_lazy)

    def _flush_lazy(self) -> None:
        self._lazy_timer = None
        self._enqueue(None)

    def _enqueue(self, item: _Item | None) -> None:
        """Changes made in one pass of the event loop go to the writer together: one wake-up of
        the writer thread (and one handover of the GIL) per pass, not one per change.
        Refreshes waiting go first, so a later change of the same user wins; None: only them."""
        first = not self._pending
        if self._lazy:
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            self._pending.append((list(self._lazy.values()), [], None))
            self._lazy = {}
        if item is not None:
            self._pending.append(item)
        if first and self._pending:
            loop = self._loop
            if loop is not None and loop.is_running():
                wait = self._handed_at + self.commit_window_s - loop.time()
                if wait > 0:  # busy: this write joins the next group
                    loop.call_later(wait, self._hand_over)
                else:
                    loop.call_soon(self._hand_over)
            else:
                self._hand_over()

    def set_commit_window(self, seconds: float) -> None:
        """[sticky] commit_window, at start and on reload."""
        self.commit_window_s = seconds

    def _hand_over(self) -> None:
        if self._pending:
            items, self._pending = self._pending, []
            self._queue.put(items)
            if self._loop is not None:
                self._handed_at = self._loop.time()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._flush_lazy()
        self._hand_over()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- the writer thread --------------------------------------------------------------------

    shared = False  # this node's file: its own table decides (lookup is never an authority)
    available = None  # no shared store to be away
    conflicts = 0

    async def lookup(self, key: str) -> tuple[bool, StickyEntry | None]:
        return False, None

    @property
    def unsaved(self) -> int:
        """Changes not yet on disk because writing failed (0 when the store is healthy)."""
        return len(self._unsaved)

    def _writer(self) -> None:
        conn: sqlite3.Connection | None = None
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            retry = [self._unsaved_item()] if self._unsaved else []
            if not batch and not retry:
                continue
            try:
                conn = conn or _connect(self.path, self.sync)
                self._commit(conn, retry + batch)
                error = None
            except Exception as exc:  # disk, SQLite or a bug: the writer must live on
                if not isinstance(exc, OSError | sqlite3.Error):
                    log.critical("sticky writer: unexpected error; changes kept in memory", exc_info=exc)
                error = exc
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                conn = None
            self._report(batch, error)
        if conn is not None:
            conn.close()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        try:
            first = self._queue.get(timeout=RETRY_UNSAVED_S if self._unsaved else None)
        except queue.Empty:
            return [], False  # nothing new: a retry of the unsaved changes alone
        if first is _STOP:
            return [], True
        batch: list[_Item] = list(first)  # type: ignore[call-overload]
        while len(batch) < MAX_BATCH_CHANGES:
            try:
                items = self._queue.get_nowait()
            except queue.Empty:
                break
            if items is _STOP:
                return batch, True
            batch.extend(items)  # type: ignore[arg-type]
        return batch, False

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        """One transaction, and as few statements as possible: the batch is folded into the
        final state of each key it touches (in order: a later put or delete wins)."""
        final: dict[str, Row | None] = {}
        for rows, deletes, _ in batch:
            for row in rows:
                final[row[0]] = row
            for key in deletes:
                final[key] = None
        puts = [row for row in final.values() if row is not None]
        gone = [key for key, row in final.items() if row is None]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk in _chunks(puts, ROWS_PER_STATEMENT):
                conn.execute(_upsert_many(len(chunk)), [v for row in chunk for v in row])
            for chunk in _chunks(gone, ROWS_PER_STATEMENT):
                conn.execute(f"DELETE FROM sticky WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _unsaved_item(self) -> _Item:
        rows = [row for row in self._unsaved.values() if row is not None]
        return rows, [key for key, row in self._unsaved.items() if row is None], None

    def _report(self, batch: list[_Item], error: BaseException | None) -> None:
        if error is None:
            self.commits += 1
            if self._unsaved:
                log.warning("sticky table %s writable again: %d change(s) kept in memory are saved now",
                            self.path, len(self._unsaved))
                self._unsaved.clear()
                self._failure_logged_at = 0.0
        else:
            self.failures += 1
            self.last_error = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {error}"
            for rows, deletes, _ in batch:  # in order: a later change of a key wins
                for row in rows:
                    self._unsaved[row[0]] = row
                for key in deletes:
                    self._unsaved[key] = None
            now = time.monotonic()
            self._failing_since_log += 1
            if now - self._failure_logged_at >= FAILURE_LOG_EVERY_S or self._failure_logged_at == 0.0:
                log.error("sticky table write to %s failed (%d failed write(s) since the last line); "
                          "%d user(s) kept in memory, retried every %gs: %s", self.path,
                          self._failing_since_log, len(self._unsaved), RETRY_UNSAVED_S, error)
                self._failure_logged_at, self._failing_since_log = now, 0
        # routing never waits on a failing disk: the in-memory table is authoritative meanwhile
        futures = [f for _, _, f in batch if f is not None]
        if futures and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_resolve_all, futures)


def _resolve_all(futures: list[asyncio.Future[Any]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(())  # apply's answer: no conflicting entries
