"""Small pieces shared by the entry points (cli, demo, ctl): event loop choice, argument types."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Callable, Sequence


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


class Child:
    """A process of ours (a worker, a handoff's successor), started by the standard library and
    watched through a pidfd on the running loop. uvloop's own spawn leaves copies of stdin, stdout
    and stderr open in the child (uvloop 0.21-0.23): each handoff's successor would inherit its
    predecessor's and add three, so the descriptors grew with every handoff. `subprocess` closes
    every descriptor not in `pass_fds`, and its child reads nothing: stdin is /dev/null."""

    def __init__(self, args: Sequence[str], pass_fds: Sequence[int]) -> None:
        self._popen = subprocess.Popen(list(args), pass_fds=tuple(pass_fds), stdin=subprocess.DEVNULL)
        self.pid = self._popen.pid
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:  # a kernel before 5.3: a thread waits instead
            self._pidfd = None
            self._loop.run_in_executor(None, self._popen.wait).add_done_callback(lambda _f: self._exited.set())
        else:
            self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._popen.wait()  # it has exited: this reaps it at once
        self._exited.set()

    @property
    def returncode(self) -> int | None:
        """Its exit status (negative: the signal that killed it) once it is reaped, else None."""
        return self._popen.returncode if self._exited.is_set() else None

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._popen.returncode is not None
        return self._popen.returncode

    def send_signal(self, sig: int) -> None:
        """Signal it unless it has been reaped (its pid may belong to another process by then)."""
        if not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(9)


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
