"""The one place tasks are created (ruff bans asyncio.create_task/ensure_future elsewhere).

- `TaskSet.spawn`: background work nobody awaits; a reference is kept and failures are logged.
- `start`: a task whose caller holds it and awaits its outcome (a connect, a durable write).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("rdpbalancer")

T = TypeVar("T")
CANCEL_ROUNDS = 10  # cancel_all: a task that lost its cancellation gets another, this many times at most
CANCEL_WAIT_S = 1.0  # and this long apart


def start(coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
    """A task its caller keeps and awaits (so its result or exception is always retrieved)."""
    return asyncio.get_running_loop().create_task(coro, name=name)


class TaskSet:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def cancel(self) -> None:
        """Cancel every task now, without waiting for them."""
        for task in list(self._tasks):
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every task and wait until they end. A task still running a second after its
        cancellation is cancelled again: a cancellation can be lost where a library turns it into
        an error the task handles (an asyncio.timeout expiring in the same loop iteration gives a
        TimeoutError instead, which redis-py raises as its own and the cluster heartbeat catches),
        and one wait would then last for ever while that loop runs on."""
        pending = set(self._tasks)
        for _ in range(CANCEL_ROUNDS):
            if not pending:
                return
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
        for task in pending:
            log.error("task %s did not end after %d cancellations; left running", task.get_name(), CANCEL_ROUNDS)
