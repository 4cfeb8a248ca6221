"""A `command` source (hosts/command.py) with real programs that misbehave: one that prints
without end, one that floods its standard error, one whose child outlives it holding the pipes,
one that hangs with a grandchild. The balancer keeps a bounded amount of what they print, and
the whole process group goes when the query ends. Each runs on uvloop and on asyncio's own loop
(the balancer falls back to it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from rdpbalancer.hosts.command import query_command
from rdpbalancer.hosts.report import MAX_REPORT_BYTES
from rdpbalancer.hosts.spec import HostSource

NOW = 1_796_246_000.0
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    def go(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coro)
    return go


def source(program: str, *args: str, timeout: float = 30.0) -> HostSource:
    return HostSource("TS01", "127.0.0.1", "command", 15.0, timeout, 60.0,
                      command=(sys.executable, "-c", program, *args))


async def query(src: HostSource) -> Any:
    """As the poller asks: under the source's timeout."""
    async with asyncio.timeout(src.timeout_s):
        return await query_command(src, lambda: NOW)


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def peak() -> int:
    return tracemalloc.get_traced_memory()[1]


class Pids:
    """Process ids a program reports through a FIFO, read on the event loop as they arrive, and
    a pidfd for each (no PID reuse can fool a check or a kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        # read and write: a FIFO with a writer never reads as at its end, whoever closes theirs
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.pidfds: list[int] = []

    async def read(self, count: int) -> list[int]:
        loop, buffer = asyncio.get_running_loop(), b""
        while buffer.count(b"\n") < count:
            ready = asyncio.Event()
            loop.add_reader(self.fd, ready.set)
            try:
                await asyncio.wait_for(ready.wait(), 30)
            finally:
                loop.remove_reader(self.fd)
            buffer += os.read(self.fd, 4096)
        pids = [int(line) for line in buffer.split()]
        self.pidfds += [os.pidfd_open(pid) for pid in pids]
        return pids

    def gone(self, timeout: float = 10.0) -> list[bool]:
        """Whether each process has ended: a pidfd turns readable when its process exits."""
        results = []
        for pidfd in self.pidfds:
            readable, _, _ = select.select([pidfd], [], [], timeout)
            results.append(bool(readable))
        return results

    def close(self) -> None:
        for pidfd in self.pidfds:
            with contextlib.suppress(ProcessLookupError):  # a failed test leaves nothing behind
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        os.close(self.fd)


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Pids]:
    fifo = Pids(tmp_path / "pids")
    yield fifo
    fifo.close()


ENDLESS = "import sys\nchunk = b'x' * 65536\nwhile True:\n    sys.stdout.buffer.write(chunk)\n"


def test_a_program_that_prints_without_end_is_stopped_at_the_limit(run: Run, traced: None) -> None:
    with pytest.raises(RuntimeError) as info:
        run(query(source(ENDLESS, timeout=60.0)))
    assert f"printed more than {MAX_REPORT_BYTES} bytes" in str(info.value)
    assert str(info.value).startswith(sys.executable)  # the program is named
    # the balancer kept the limit and a few reads past it, not what the program could print in a minute
    assert peak() < 4 * MAX_REPORT_BYTES, peak()


def test_a_flood_on_stderr_is_bounded_and_its_last_line_still_named(run: Run, traced: None) -> None:
    flood = ("import sys\nfor _ in range(1024):\n    sys.stderr.write('noise ' * 10922 + '\\n')\n"
             "sys.stderr.write('the host is unreachable\\n')\nsys.exit(3)\n")  # 64 MiB, then the reason
    with pytest.raises(RuntimeError, match=r"exited with 3: the host is unreachable$"):
        run(query(source(flood)))
    assert peak() < 4 * 1024 * 1024, peak()


def test_a_timed_out_program_goes_with_its_whole_process_group(run: Run, pids: Pids) -> None:
    """The program starts a grandchild that inherits its pipes, then both sleep; at the
    poller's timeout both are killed, and the query does not wait for the pipes."""
    hang = ("import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "with open(sys.argv[1], 'w') as f:\n    f.write(f'{os.getpid()}\\n{child.pid}\\n')\n"
            "time.sleep(600)\n")

    async def scenario() -> None:
        src = source(hang, str(pids.path))
        async with asyncio.timeout(None) as deadline:  # the poller's timeout, fired once both run
            task = asyncio.create_task(query_command(src, lambda: NOW))
            await pids.read(2)
            deadline.reschedule(asyncio.get_running_loop().time())
            await task

    with pytest.raises(TimeoutError):
        run(scenario())
    assert pids.gone() == [True, True]  # the program and its grandchild


def test_a_descendant_holding_the_pipes_after_the_program_exits_does_not_hold_the_query(
        run: Run, pids: Pids) -> None:
    """The program prints its list and exits 0, leaving a process in a session of its own (out
    of reach of the group kill) that keeps its stdout and stderr open: the list is taken."""
    daemon = ("import json, os, subprocess, sys\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
              " start_new_session=True)\n"
              "with open(sys.argv[1], 'w') as f:\n    f.write(f'{child.pid}\\n')\n"
              "print(json.dumps({'sessions': [{'user': 'alice', 'id': '2'}]}))\n")

    async def scenario() -> Any:
        task = asyncio.create_task(query(source(daemon, str(pids.path), timeout=20.0)))
        await pids.read(1)
        return await task

    report = run(scenario())
    assert [s.user for s in report.sessions] == ["alice"]
    assert pids.gone(timeout=0) == [False]  # it is still there: the query did not wait for it


def test_a_well_behaved_program_still_works_and_leaves_nothing(run: Run, pids: Pids) -> None:
    """Its own leftover child in the group is killed when it exits."""
    tidy = ("import json, os, subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "with open(sys.argv[1], 'w') as f:\n    f.write(f'{child.pid}\\n')\n"
            "print(json.dumps({'sessions': [{'user': 'bob', 'state': 'disconnected'}]}))\n")

    async def scenario() -> Any:
        task = asyncio.create_task(query(source(tidy, str(pids.path))))
        await pids.read(1)
        return await task

    report = run(scenario())
    assert [(s.user, s.state.value) for s in report.sessions] == [("bob", "disconnected")]
    assert pids.gone() == [True]


def test_a_program_that_cannot_start_is_named(run: Run) -> None:
    src = HostSource("TS01", "127.0.0.1", "command", 15.0, 5.0, 60.0, command=("/nonexistent/list-sessions",))
    with pytest.raises(RuntimeError, match="cannot run /nonexistent/list-sessions"):
        run(query(src))
