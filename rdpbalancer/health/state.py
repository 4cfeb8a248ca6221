"""Per-server health: HAProxy-style rise/fall counting, as a pure state machine.

A server starts `unknown`, which routes like `up` (a restart of the balancer must not refuse
everyone while the first checks run), and its first check result is decisive: one failure
makes it `down`, one success `up`. After that, `fall` consecutive failures take an `up` server
down and `rise` consecutive successes bring a `down` one back.

Passive observations come from live traffic: a failed connect counts toward `fall` exactly like
a failed check, so a dead server is noticed between checks; a successful connect breaks a
failure streak but never counts toward `rise` (only checks bring a server back).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rdpbalancer.policy.model import Server

JITTER_FRACTION = 0.1  # each interval varies by +-10% so checks of many servers do not synchronise
FIRST_CHECK_SPREAD_S = 1.0  # first checks are spread over this much time after start


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    server: Server
    kind: str  # "rdp" | "tcp" | "none"
    interval_s: float
    timeout_s: float
    rise: int
    fall: int


@dataclass(frozen=True, slots=True)
class Transition:
    server: str
    old: Health
    new: Health
    at: float
    reason: str  # "check passed", "3 failed checks", "passive: connection refused"...
    last_error: str | None


@dataclass(slots=True)
class HealthTracker:
    server: str
    rise: int = 2
    fall: int = 3
    checked: bool = True  # False for check = "none": always up, observations ignored
    state: Health = Health.UNKNOWN
    since: float = 0.0
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    last_check: float | None = None
    last_error: str | None = None
    last_latency_s: float | None = None

    def __post_init__(self) -> None:
        if not self.checked:
            self.state = Health.UP

    @property
    def routable(self) -> bool:
        return self.state is not Health.DOWN

    def check_result(self, ok: bool, now: float, *, latency_s: float | None = None,
                     error: str | None = None) -> Transition | None:
        if not self.checked:
            return None
        self.last_check, self.last_latency_s = now, latency_s
        if ok:
            return self._success(now)
        self.last_error = error
        return self._failure(now, error, passive=False)

    def passive_failure(self, now: float, error: str) -> Transition | None:
        if not self.checked or self.state is Health.DOWN:
            return None
        self.last_error = f"passive: {error}"
        return self._failure(now, error, passive=True)

    def passive_success(self) -> None:
        if self.state is Health.UP:
            self.failures = 0

    def _success(self, now: float) -> Transition | None:
        self.failures = 0
        self.successes += 1
        if self.state is Health.UNKNOWN or (self.state is Health.DOWN and self.successes >= self.rise):
            return self._move(Health.UP, now, f"{self.successes} successful check(s)")
        return None

    def _failure(self, now: float, error: str | None, *, passive: bool) -> Transition | None:
        self.successes = 0
        self.failures += 1
        kind = "passive failure" if passive else "failed check"
        if self.state is Health.UNKNOWN or (self.state is Health.UP and self.failures >= self.fall):
            return self._move(Health.DOWN, now, f"{self.failures} {kind}(s)")
        return None

    def _move(self, new: Health, now: float, reason: str) -> Transition:
        error = self.last_error if new is Health.DOWN else None  # a recovery is not about the old error
        transition = Transition(self.server, self.state, new, now, reason, error)
        self.state, self.since = new, now
        self.successes = self.failures = 0
        return transition


def next_delay(interval_s: float, random01: float) -> float:
    """The pause before the next check: the interval +-JITTER_FRACTION, from a [0, 1) draw."""
    return interval_s * (1.0 + JITTER_FRACTION * (2.0 * random01 - 1.0))


def first_delay(interval_s: float, random01: float) -> float:
    return random01 * min(interval_s, FIRST_CHECK_SPREAD_S)
