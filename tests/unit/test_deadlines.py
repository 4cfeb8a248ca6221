"""Handshake deadlines share one timer: each fires once, at most a tick late; cancelled ones
never fire; the timer stops when nothing is left."""

from __future__ import annotations

import asyncio

from rdpbalancer.relay.deadlines import TICK_S, Deadlines


async def test_deadlines_fire_in_order_and_cancelled_ones_do_not() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    fired: list[tuple[str, float]] = []
    start = loop.time()
    for name, delay in (("late", 0.2), ("early", 0.05), ("cancelled", 0.1)):
        entry = deadlines.add(delay, lambda name=name: fired.append((name, loop.time() - start)))
        if name == "cancelled":
            Deadlines.cancel(entry)
    await asyncio.sleep(0.2 + 3 * TICK_S)
    assert [name for name, _ in fired] == ["early", "late"]
    assert fired[0][1] >= 0.049 and fired[1][1] >= 0.199  # never early (the loop clock counts in ms)
    assert len(deadlines) == 0 and deadlines._timer is None  # nothing left: no timer


async def test_a_shorter_deadline_added_later_is_not_held_behind_a_longer_one() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    fired: list[str] = []
    deadlines.add(30.0, lambda: fired.append("long"))  # the timer is armed 30 s out
    deadlines.add(0.05, lambda: fired.append("short"))  # a reload shortened handshake_timeout
    await asyncio.sleep(0.05 + 3 * TICK_S)
    assert fired == ["short"] and len(deadlines) == 1
    assert deadlines._timer is not None and deadlines._armed_for > loop.time() + 20
    deadlines._timer.cancel()
