"""Slow start: a server that begins taking new users again gets them gradually.

A host back from a reboot has no sessions, so least-load balancing would send it every new
user until it caught up: a 9:00 logon storm on one freshly booted host with cold profile disks
and caches. As HAProxy's `slowstart` does, the server's weight is ramped instead: from
`MIN_SHARE` of its weight to all of it, linearly over the window. New users are then spread as
the ramped weights say; a server that already holds a user's session is not affected (sticky,
session-directory and routing-token users go there at once).

A ramp starts when a server begins to take new users: it comes up after being down, leaves
drain or maintenance, is added by a reload, or gets a weight above 0 again. A balancer that
starts does not ramp the servers it finds up: nothing says they were empty (a handoff passes
the ramps under way on, with the rest of each server's condition).

Pure functions of the time they are given; the router keeps when each ramp started.
"""

from __future__ import annotations

from typing import Final

MIN_SHARE: Final = 0.05  # a ramp starts at 5 % of the weight (HAProxy: about 1/16 at weight 1)


def progress(ramp_from: float | None, window_s: float, now: float) -> float:
    """How far the ramp has come, 0.0 to 1.0 (1.0: no ramp, or over)."""
    if ramp_from is None or window_s <= 0:
        return 1.0
    done = (now - ramp_from) / window_s
    return 1.0 if done >= 1.0 else max(0.0, done)


def share(ramp_from: float | None, window_s: float, now: float) -> float:
    """The fraction of its weight a server has now: MIN_SHARE at the start, 1.0 when over."""
    done = progress(ramp_from, window_s, now)
    return 1.0 if done >= 1.0 else max(MIN_SHARE, done)


def rebase(ramp_from: float | None, old_window_s: float, new_window_s: float, now: float) -> float | None:
    """A reload changed the window: the ramp keeps its progress and goes on at the new pace."""
    if ramp_from is None or old_window_s == new_window_s:
        return ramp_from
    return now - progress(ramp_from, old_window_s, now) * new_window_s
