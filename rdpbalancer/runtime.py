"""Small pieces shared by the entry points (cli, demo, ctl): event loop choice, argument types."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed, else None (asyncio's default loop)."""
    try:
        import uvloop  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return uvloop.new_event_loop


def own_command(*args: str) -> list[str]:
    """This program again (a worker, a handoff's successor), from the package this interpreter
    imports: `-P` keeps the current directory off sys.path, so a process started from a source
    checkout still runs the installed code, as its parent does."""
    return [sys.executable, "-P", "-m", "rdpbalancer", *args]


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


# CPython collects its youngest generation every 700 container allocations. A connection
# allocates a few dozen small objects (the session machine's events and commands, asyncio's
# handles), so at a thousand connections a second the collector ran about fifty times a second
# and its full collections walked the whole sticky table: C32 lost 15 % of its rate and its p99
# setup time rose from 43 to 75 ms (benchmarks/run.py, README "Performance"). Connections make
# almost no reference cycles, so collecting less often costs little memory.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """For a serving process, once started: what exists now (configuration, loaded table,
    imported modules) is left out of every later collection, which also runs less often."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
