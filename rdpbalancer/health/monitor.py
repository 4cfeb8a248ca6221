"""The health monitor: one check loop per server, off the hot path, feeding the router.

State changes are logged (server, old -> new, reason, last error), kept in a bounded history
for the admin API and dashboard, and applied to the router's server conditions. With
`on_down = "shutdown-sessions"`, a server going down also cuts its live sessions.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from rdpbalancer import clock
from rdpbalancer.health.probes import ProbeResult, probe
from rdpbalancer.health.state import CheckSpec, Health, HealthTracker, Transition, first_delay, next_delay
from rdpbalancer.policy.engine import Router
from rdpbalancer.tasks import TaskSet

log = logging.getLogger("rdpbalancer.health")

HISTORY_LENGTH = 500  # state changes kept for the API and the dashboard

Prober = Callable[[str, str, int, float], Awaitable[ProbeResult]]


class HealthMonitor:
    def __init__(self, router: Router, specs: list[CheckSpec], *, shutdown_sessions_on_down: bool = False,
                 on_shutdown_sessions: Callable[[str], int] = lambda _server: 0,
                 on_check: Callable[[str, ProbeResult], None] = lambda _kind, _result: None,
                 clock: Callable[[], float] = clock.now, rand: Callable[[], float] = random.random,
                 prober: Prober = probe) -> None:
        self.router = router
        self.clock, self.rand, self.prober = clock, rand, prober
        self.shutdown_sessions_on_down = shutdown_sessions_on_down
        self.on_shutdown_sessions = on_shutdown_sessions  # cuts a server's live sessions; how many
        self.on_check = on_check  # (check kind, result) of every active check: the metrics observe it
        self.trackers: dict[str, HealthTracker] = {}
        self.specs: dict[str, CheckSpec] = {}
        self.history: deque[Transition] = deque(maxlen=HISTORY_LENGTH)
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskSet()
        self._running = False
        self.update(specs)

    # -- configuration ----------------------------------------------------------------------

    def update(self, specs: list[CheckSpec]) -> None:
        """Install check settings (start or reload); trackers of kept servers keep their state."""
        new = {s.server.name: s for s in specs}
        for name in set(self.specs) - set(new):
            self._stop_loop(name)
            self.trackers.pop(name, None)
        for name, spec in new.items():
            old_spec = self.specs.get(name)
            tracker = self.trackers.get(name)
            if tracker is None or old_spec is None or old_spec.kind != spec.kind:
                tracker = HealthTracker(name, spec.rise, spec.fall, checked=spec.kind != "none")
                self.trackers[name] = tracker
                self._apply(tracker)
            tracker.rise, tracker.fall = spec.rise, spec.fall
            if old_spec != spec:
                self._stop_loop(name)
        self.specs = new
        if self._running:
            self._start_loops()

    def start(self) -> None:
        self._running = True
        self._start_loops()

    async def stop(self) -> None:
        self._running = False
        for name in list(self._loops):
            self._stop_loop(name)
        await self._tasks.cancel_all()

    def _start_loops(self) -> None:
        for name, spec in self.specs.items():
            if spec.kind != "none" and name not in self._loops:
                self._loops[name] = self._tasks.spawn(self._loop(spec), name=f"health-{name}")

    def _stop_loop(self, name: str) -> None:
        task = self._loops.pop(name, None)
        if task is not None:
            task.cancel()

    # -- checking ---------------------------------------------------------------------------

    async def _loop(self, spec: CheckSpec) -> None:
        await asyncio.sleep(first_delay(spec.interval_s, self.rand()))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.check_now(spec.server.name)
            # the interval runs from check start to check start, as HAProxy's `inter`: a probe
            # that times out does not stretch the time to detect a dead server
            elapsed = loop.time() - started
            await asyncio.sleep(max(0.0, next_delay(spec.interval_s, self.rand()) - elapsed))

    async def check_now(self, name: str) -> ProbeResult:
        spec = self.specs[name]
        result = await self.prober(spec.kind, spec.server.host, spec.server.port, spec.timeout_s)
        self.on_check(spec.kind, result)
        tracker = self.trackers.get(name)
        if tracker is not None and self.specs.get(name) is spec:
            self._record(tracker.check_result(result.ok, self.clock(), latency_s=result.latency_s,
                                              error=result.error))
        return result

    # passive observations, from live traffic (relay.context.BackendEvents)
    def connect_failed(self, server: str, error: str) -> None:
        tracker = self.trackers.get(server)
        if tracker is not None:
            self._record(tracker.passive_failure(self.clock(), error))

    def connect_succeeded(self, server: str) -> None:
        tracker = self.trackers.get(server)
        if tracker is not None:
            tracker.passive_success()

    def _record(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self.history.append(transition)
        tracker = self.trackers[transition.server]
        self._apply(tracker)
        log_at = logging.WARNING if transition.new is Health.DOWN else logging.INFO
        log.log(log_at, "server %s %s -> %s (%s)%s", transition.server, transition.old, transition.new,
                transition.reason, f"; last error: {transition.last_error}" if transition.last_error else "")
        if transition.new is Health.DOWN and self.shutdown_sessions_on_down:
            cut = self.on_shutdown_sessions(transition.server)
            log.warning("server %s down: %d live session(s) closed (on_down = shutdown-sessions)",
                        transition.server, cut)

    def _apply(self, tracker: HealthTracker) -> None:
        now = tracker.since or self.clock()
        if self.router.set_health(tracker.server, tracker.routable, now):
            ramp = self.router.ramp(tracker.server, self.clock())
            if ramp is not None:
                log.info("server %s takes new users gradually: slow start, %.0fs left", tracker.server, ramp[1])
