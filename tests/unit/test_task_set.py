"""TaskSet.cancel_all ends every task, even one whose first cancellation was lost."""

from __future__ import annotations

import asyncio

from rdpbalancer.tasks import TaskSet


async def test_a_task_that_swallows_its_first_cancellation_is_cancelled_again() -> None:
    """As the cluster heartbeat did when redis-py turned its cancellation into a TimeoutError it
    caught: the loop went on, and one cancel-and-wait never returned (a hung stop)."""
    rounds: list[int] = []

    async def heartbeat() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                rounds.append(1)
                if len(rounds) == 1:
                    continue  # lost, as a library's error handling would lose it
                raise

    tasks = TaskSet()
    task = tasks.spawn(heartbeat(), name="heartbeat")
    await asyncio.sleep(0.01)
    await asyncio.wait_for(tasks.cancel_all(), 5)
    assert task.cancelled() and len(rounds) == 2 and len(tasks) == 0


async def test_cancel_all_with_nothing_running_returns_at_once() -> None:
    await asyncio.wait_for(TaskSet().cancel_all(), 0.5)
