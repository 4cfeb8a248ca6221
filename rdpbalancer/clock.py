"""The process clock: a step of the wall clock changes no duration, hence no routing decision.

`now()` reads like the wall clock (seconds since the epoch: sticky entries outlive the process,
are stored and shown) but it advances with CLOCK_MONOTONIC: it is the wall clock read once, when
the process started, plus the monotonic time since. Every duration measured in the process
(down for, failover_after, slow start, the age of a host's list, the order of its answers, the
logon grace) is the difference of two readings, so an NTP step or an admin's `date -s` in either
direction neither holds users on a dead server nor ages a list that is fresh.

The price: after a step, the timestamps this process writes are off by the step until it
restarts (a sticky entry's `last_used` reads 10 minutes early after a 10-minute step forward).
They are stored, compared with other timestamps and shown; none of them decides alone. A
handoff's new process takes its predecessor's offset (`adopt`), so the times the two processes
exchange (a host's last answer, when a server went down) stay on one scale; CLOCK_MONOTONIC is
the same for every process of the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ProcessClock:
    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self.offset = wall() - mono()  # the wall clock at start, less the monotonic clock then

    def now(self) -> float:
        """Seconds since the epoch as the wall clock said at start, advanced monotonically."""
        return self.offset + self._mono()

    def adopt(self, offset: float) -> None:
        """Read on another process's scale (a handoff's predecessor, on the same machine)."""
        self.offset = offset


PROCESS_CLOCK = ProcessClock()
now = PROCESS_CLOCK.now  # the shell's clock for everything that routes (pure code takes `now`)
