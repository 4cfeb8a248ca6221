"""The directory shell: keeps one GroupSnapshot current and hands each new one to the router.

Start-up: the disk cache first (a restart while AD is down still routes by group), the group
files, then one LDAP fetch, bounded by the LDAP timeouts. Then a loop: a cheap stat() of each
group file every `file_check_s`, an LDAP fetch every `refresh_s` (every `retry_s` after a failure).
A failed fetch keeps the last good data; `status()` shows the error and the age of the data.

ldap3 and file reads run in worker threads (`asyncio.to_thread`), never on the event loop. The
clock and the sleep are injected, so tests move time instead of waiting for it. The wall clock
(`time.time`) is the right one here: `fetched_at` is stored in the cache and outlives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rdpbalancer import tasks
from rdpbalancer.directory.cache import load_membership, save_membership
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.files import FileGroupWatcher
from rdpbalancer.directory.ldap import LdapDirectory
from rdpbalancer.directory.model import GroupSnapshot, SnapshotSource

log = logging.getLogger("rdpbalancer.directory")

FILE_CHECK_INTERVAL_S = 2.0  # one stat() per group file: an edited file is routed on within 2 s
RETRY_AFTER_FAILURE_S = 30.0  # AD back after an outage: fresh data within 30 s, not a whole refresh_s

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DirectoryStatus:
    last_success: float | None  # wall-clock time of this process's last good LDAP fetch
    last_attempt: float | None  # wall-clock time of its last LDAP fetch attempt
    last_error: str | None  # why the last attempt failed; None once one succeeds
    age_s: float | None  # age of the membership in use (None while there is none from LDAP or cache)
    source: SnapshotSource  # of the LDAP part when LDAP is configured, else "files" or "static"
    group_sizes: Mapping[str, int]
    file_errors: Mapping[str, str]  # group -> why its file's last good content is in use


class DirectorySync:
    def __init__(
        self,
        *,
        ldap: LdapDirectory | None,
        ldap_groups: Mapping[str, str],
        file_groups: Mapping[str, Path],
        static_groups: Mapping[str, frozenset[str]],
        cache_path: Path | None,
        refresh_s: float,
        on_update: Callable[[GroupSnapshot], None],
        clock: Clock = time.time,
        file_check_s: float = FILE_CHECK_INTERVAL_S,
        retry_s: float = RETRY_AFTER_FAILURE_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        _check_sources(ldap, ldap_groups, file_groups, static_groups)
        self._ldap, self._ldap_groups = ldap, dict(ldap_groups)
        self._watchers = {name: FileGroupWatcher(path) for name, path in file_groups.items()}
        self._static = dict(static_groups)
        self._cache_path = cache_path
        self._refresh_s, self._retry_s, self._file_check_s = refresh_s, min(retry_s, refresh_s), file_check_s
        self._on_update, self._clock, self._sleep = on_update, clock, sleep
        self._ldap_data: Mapping[str, frozenset[str]] = {}
        self._ldap_source: SnapshotSource = "none"
        self._ldap_fetched_at: float | None = None
        self._last_success: float | None = None
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._next_fetch = 0.0
        self._ldap_lock, self._files_lock = asyncio.Lock(), asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._snapshot = self._build()

    @property
    def snapshot(self) -> GroupSnapshot:
        return self._snapshot

    async def start(self) -> None:
        """Publish what the cache and files hold, try LDAP once, then keep refreshing in the background."""
        await self._load_cache()
        await self._poll_files()
        self._started = True
        self._publish()
        if self._ldap is not None:
            async with self._ldap_lock:
                await self._fetch()
        if self._ldap is not None or self._watchers:
            self._task = tasks.start(self._run(), name="directory-sync")

    async def stop(self) -> None:
        task, self._task, self._started = self._task, None, False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh_now(self) -> bool:
        """Re-check the files and fetch LDAP now; False when the fetch failed (logged, see status())."""
        await self._poll_files()
        if self._ldap is None:
            return True
        async with self._ldap_lock:
            return await self._fetch()

    def status(self) -> DirectoryStatus:
        snapshot = self._snapshot
        age = None if snapshot.source == "none" else max(0.0, self._clock() - snapshot.fetched_at)
        return DirectoryStatus(
            last_success=self._last_success,
            last_attempt=self._last_attempt,
            last_error=self._last_error,
            age_s=age,
            source=snapshot.source,
            group_sizes=snapshot.sizes(),
            file_errors={name: w.error for name, w in self._watchers.items() if w.error is not None},
        )

    async def _run(self) -> None:
        while True:
            await self._sleep(self._next_wait())
            try:
                await self._poll_files()
                await self._fetch_if_due()
            except Exception:  # the task edge: log, keep the last good data, try again next round
                log.exception("directory refresh failed unexpectedly")

    def _next_wait(self) -> float:
        if self._ldap is None:
            return self._file_check_s
        until_fetch = max(0.0, self._next_fetch - self._clock())
        return min(until_fetch, self._file_check_s) if self._watchers else until_fetch

    async def _fetch_if_due(self) -> None:
        if self._ldap is None:
            return
        async with self._ldap_lock:
            if self._clock() >= self._next_fetch:  # checked under the lock: refresh_now() may just have run
                await self._fetch()

    async def _fetch(self) -> bool:
        assert self._ldap is not None
        self._last_attempt = self._clock()
        try:
            data = await asyncio.to_thread(self._ldap.fetch, self._ldap_groups)
        except Exception as exc:  # the worker thread's edge; DirectoryError is the expected kind
            self._failed(exc)
            return False
        now = self._clock()
        self._ldap_data, self._ldap_source, self._ldap_fetched_at = data, "ldap", now
        self._last_success, self._last_error, self._next_fetch = now, None, now + self._refresh_s
        self._publish()
        await self._save_cache(data, now)
        return True

    def _failed(self, exc: Exception) -> None:
        expected = isinstance(exc, DirectoryError)
        message = str(exc) if expected else f"unexpected error: {exc!r}"
        # A warning when something new goes wrong; the same outage again every retry_s is info.
        level = logging.WARNING if message != self._last_error or not expected else logging.INFO
        self._last_error, self._next_fetch = message, self._clock() + self._retry_s
        kept = (
            f"keeping the {self._ldap_source} data fetched {self._clock() - self._ldap_fetched_at:.0f}s ago"
            if self._ldap_fetched_at is not None
            else "no LDAP group data yet"
        )
        log.log(level, "LDAP refresh failed: %s; %s", message, kept, exc_info=not expected)

    async def _load_cache(self) -> None:
        if self._ldap is None or self._cache_path is None:
            return
        cached = await asyncio.to_thread(load_membership, self._cache_path, self._ldap_groups)
        if cached is not None:
            self._ldap_data, self._ldap_source, self._ldap_fetched_at = cached.groups, "cache", cached.fetched_at
            age = self._clock() - cached.fetched_at
            log.info("group cache %s: %d groups, fetched %.0fs ago", self._cache_path, len(cached.groups), age)

    async def _save_cache(self, data: Mapping[str, frozenset[str]], fetched_at: float) -> None:
        if self._cache_path is None:
            return
        try:
            await asyncio.to_thread(save_membership, self._cache_path, data, self._ldap_groups, fetched_at)
        except OSError as exc:
            log.error("group cache %s: cannot write: %s (routing uses the data in memory)", self._cache_path, exc)

    async def _poll_files(self) -> None:
        if not self._watchers:
            return
        async with self._files_lock:
            changed = await asyncio.to_thread(self._poll_watchers)
        if changed and self._started:  # start() publishes once, after its first poll
            self._publish()

    def _poll_watchers(self) -> bool:
        return any([watcher.poll() for watcher in self._watchers.values()])  # a list: poll every one

    def _publish(self) -> None:
        self._snapshot = self._build()
        self._on_update(self._snapshot)

    def _build(self) -> GroupSnapshot:
        groups: dict[str, frozenset[str]] = dict(self._static)
        groups.update({name: watcher.members for name, watcher in self._watchers.items()})
        groups.update(self._ldap_data)
        if self._ldap is not None:
            fetched_at = self._clock() if self._ldap_fetched_at is None else self._ldap_fetched_at
            return GroupSnapshot(groups, fetched_at, self._ldap_source)
        return GroupSnapshot(groups, self._clock(), "files" if self._watchers else "static")


def _check_sources(
    ldap: LdapDirectory | None,
    ldap_groups: Mapping[str, str],
    file_groups: Mapping[str, Path],
    static_groups: Mapping[str, frozenset[str]],
) -> None:
    if ldap_groups and ldap is None:
        raise ValueError("LDAP groups given without an LdapDirectory")
    names = [*ldap_groups, *file_groups, *static_groups]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"groups defined by more than one source: {', '.join(duplicates)}")
