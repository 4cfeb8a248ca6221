"""The handshake deadlines of every connection, with one timer instead of one per connection.

A connection is given a deadline when it is accepted and almost always cancels it a few
milliseconds later, when its Connection Request is complete. A timer of its own costs a handle
created and destroyed in the event loop each time; here a deadline is an entry in a heap,
cancelled by marking it, and one timer wakes at most every TICK_S for the earliest one. So a
deadline fires up to TICK_S late: nothing for a timeout of seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

TICK_S = 0.05  # at most this late, and at most 1/TICK_S wake-ups a second however many connections


# [when (loop time), sequence, callback or None once cancelled]: lists, so the heap compares
# them in C
Deadline = list[Any]


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0

    def __len__(self) -> int:
        """Entries held, cancelled ones included until their time."""
        return len(self._heap)

    def add(self, delay_s: float, callback: Callable[[], None]) -> Deadline:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay_s
        entry: Deadline = [when, next(self._seq), callback]
        heapq.heappush(self._heap, entry)
        if self._timer is None or when < self._armed_for - TICK_S:
            self._arm(loop)
        return entry

    @staticmethod
    def cancel(entry: Deadline) -> None:
        entry[2] = None  # left in the heap, dropped when its time comes

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        when = max(self._heap[0][0], loop.time() + TICK_S)
        self._timer, self._armed_for = loop.call_at(when, self._fire), when

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            callback = heapq.heappop(heap)[2]
            if callback is not None:
                due.append(callback)
        if heap:
            self._arm(loop)
        for callback in due:
            callback()
