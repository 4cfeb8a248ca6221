"""Small pieces shared by the entry points (cli, demo, ctl): event loop choice, argument types."""

from __future__ import annotations

import argparse
import asyncio
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
