"""Asks each polled host for its sessions in the background, and never blocks routing.

One loop per host, each at its `interval` (spread over the first interval so that 50 hosts are
not asked at once). A query runs outside the event loop: a subprocess (`command`), or a thread
for impacket (`windows`), and at most `max_parallel` run together. A query past its `timeout`
is abandoned and counts as a failure. A failure is logged once when it starts and once when
the host answers again; meanwhile the host's last list ages, and after `stale_after` routing
falls back to the sticky table for it (policy/host_sessions.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rdpbalancer import clock
from rdpbalancer.hosts.command import query_command
from rdpbalancer.hosts.spec import HostSource, SessionsPlan
from rdpbalancer.policy.host_sessions import DEFAULT_LOGON_GRACE_S, HostReport
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.tasks import TaskSet

log = logging.getLogger("rdpbalancer.sessions")

Query = Callable[[HostSource], Awaitable[HostReport]]


@dataclass(slots=True)
class SourceStats:
    """What the metrics and /healthz say of one host's source."""

    kind: str
    queries: int = 0
    failures: int = 0
    last_duration_s: float = 0.0
    failing_since: float | None = None  # wall clock; None while it answers


class SessionPoller:
    def __init__(self, directory: SessionDirectory, plan: SessionsPlan, *, clock: Callable[[], float] = clock.now,
                 windows: Query | None = None) -> None:
        self.directory = directory
        self.plan = plan
        self.clock = clock
        self.stats: dict[str, SourceStats] = {}
        self._tasks = TaskSet()
        self._limit = asyncio.Semaphore(plan.max_parallel)
        self._threads: ThreadPoolExecutor | None = None
        self._windows = windows
        self.configure(plan)

    def configure(self, plan: SessionsPlan) -> None:
        """A new plan (start, reload): the directory's freshness windows, stats for each source."""
        self.plan = plan
        grace = max((r.logon_grace_s for r in plan.rules.values()), default=DEFAULT_LOGON_GRACE_S)
        self.directory.configure({s.server: s.stale_after_s for s in plan.sources}, grace)
        self.stats = {s.server: self.stats.get(s.server) or SourceStats(s.kind) for s in plan.sources}
        for server in set(self.directory.reports) - {s.server for s in plan.sources}:
            self.directory.forget(server)

    def start(self) -> None:
        polled = [s for s in self.plan.sources if s.kind != "push"]
        if any(s.kind == "windows" for s in polled) and self._threads is None:
            self._threads = ThreadPoolExecutor(self.plan.max_parallel, thread_name_prefix="sessions")
        for index, source in enumerate(polled):
            delay = source.interval_s * index / max(1, len(polled))  # spread over the first interval
            self._tasks.spawn(self._poll(source, delay), name=f"sessions-{source.server}")

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def restart(self, plan: SessionsPlan) -> None:
        await self.stop()
        self.configure(plan)
        self.start()

    # -- one host --------------------------------------------------------------------------------

    async def _poll(self, source: HostSource, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            await self.poll_once(source)
            await asyncio.sleep(source.interval_s)

    async def poll_once(self, source: HostSource) -> None:
        stats = self.stats.setdefault(source.server, SourceStats(source.kind))
        started = time.monotonic()
        async with self._limit:
            try:
                async with asyncio.timeout(source.timeout_s):
                    report = await self._query(source)
            except TimeoutError:
                self._failed(source, stats, f"no answer within {source.timeout_s:g}s")
                return
            except Exception as exc:  # a source's fault is a failure of that host, never of the balancer
                self._failed(source, stats, str(exc) or type(exc).__name__)
                return
            finally:
                stats.queries += 1
                stats.last_duration_s = time.monotonic() - started
        self.accept(source.server, report)

    def accept(self, server: str, report: HostReport) -> None:
        """A host's list, polled or pushed."""
        stats = self.stats.get(server)
        if stats is not None and stats.failing_since is not None:
            log.info("sessions of %s: answering again after %.0fs (%d sessions)", server,
                     self.clock() - stats.failing_since, len(report.sessions))
            stats.failing_since = None
        self.directory.update(report)

    def _failed(self, source: HostSource, stats: SourceStats, error: str) -> None:
        stats.failures += 1
        now = self.clock()
        if stats.failing_since is None:
            stats.failing_since = now
            log.warning("sessions of %s (%s source): %s; its last list ages, and after %gs routing for it "
                        "falls back to the sticky table", source.server, source.kind, error, source.stale_after_s)
        self.directory.failed(source.server, error, now)

    async def _query(self, source: HostSource) -> HostReport:
        if source.kind == "command":
            return await query_command(source, self.clock)
        if source.kind == "windows":
            query = self._windows
            if query is None:
                # impacket (the [windows] extra) is loaded only where a windows source is configured
                from rdpbalancer.hosts.windows import query_windows  # noqa: PLC0415

                loop, threads = asyncio.get_running_loop(), self._threads
                return await loop.run_in_executor(threads, query_windows, source, self.clock())
            return await query(source)
        raise ValueError(f"{source.kind} sessions are not polled")
