"""`source = "command"`: a program that prints one host's sessions as JSON (hosts/report.py) and
exits 0. "{server}", "{host}" and "{port}" in its arguments are replaced. Examples: the contrib
xrdp script over ssh, or a site's own inventory tool. The program gets no credentials from us
and no shell: the arguments are passed as they are.

What the program can cost the balancer is bounded: at most MAX_REPORT_BYTES (+1, to see that it
printed more) of its standard output are kept, and the last MAX_STDERR_BYTES of its standard
error. It runs in a process group of its own, and the whole group is killed when the query ends
for any reason (printed too much, the poller's timeout, shutdown, or it exited): a descendant it
left behind cannot keep running, nor keep the query waiting by holding the pipes. A descendant
that left the group (setsid) is not waited for: its pipes are closed on it after PIPE_GRACE_S."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from typing import cast

from rdpbalancer.hosts.report import MAX_REPORT_BYTES, parse_report
from rdpbalancer.hosts.spec import HostSource
from rdpbalancer.policy.host_sessions import HostReport

MAX_STDERR_BYTES = 64 * 1024  # its tail names the fault in the error
PIPE_GRACE_S = 1.0  # after the program exited: what it printed is read; pipes still held then are closed
KILL_WAIT_S = 5.0  # SIGKILL is not refused; this bounds a process stuck in the kernel


def argv(source: HostSource) -> list[str]:
    """The command with its three placeholders replaced; every other brace stays as written (a
    program given inline, `python3 -c "...{...}..."`, keeps its own)."""
    values = {"{server}": source.server, "{host}": source.host, "{port}": str(source.port or "")}
    out = []
    for arg in source.command:
        text = arg
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        out.append(text)
    return out


class Output(asyncio.SubprocessProtocol):
    """What the program prints, within the bounds; an event for each thing the query waits on."""

    def __init__(self, max_out: int = MAX_REPORT_BYTES, max_err: int = MAX_STDERR_BYTES) -> None:
        self.max_out, self.max_err = max_out, max_err
        self.out = bytearray()
        self.err = bytearray()  # the tail
        self.overflow = False
        self.transport: asyncio.SubprocessTransport | None = None
        self.exited = asyncio.Event()
        self.out_closed = asyncio.Event()
        self.err_closed = asyncio.Event()
        self.settled = asyncio.Event()  # printed too much, or exited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's subprocess transport (uvloop's does not subclass asyncio's)
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            if self.overflow:
                return
            self.out += data[:self.max_out + 1 - len(self.out)]
            if len(self.out) > self.max_out:
                self.overflow = True
                self.settled.set()
                self._pause(1)  # no more reads: the group is killed next
        else:
            self.err += data[-self.max_err:]
            del self.err[:-self.max_err]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        (self.out_closed if fd == 1 else self.err_closed).set()

    def process_exited(self) -> None:
        self.exited.set()
        self.settled.set()

    def _pause(self, fd: int) -> None:
        pipe = self.transport.get_pipe_transport(fd) if self.transport is not None else None
        if pipe is not None:
            cast(asyncio.ReadTransport, pipe).pause_reading()


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """True if `event` is set within `seconds` (wait_for, not asyncio.timeout: this also runs in
    the cleanup of a query the poller's timeout is cancelling)."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pgid, signal.SIGKILL)


async def _run(args: list[str]) -> tuple[Output, int | None]:
    loop = asyncio.get_running_loop()
    try:
        transport, output = await loop.subprocess_exec(
            Output, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)  # its own process group, killed whole below
    except OSError as exc:
        raise RuntimeError(f"cannot run {args[0]}: {exc.strerror or exc}") from None
    pgid = transport.get_pid()
    try:
        await output.settled.wait()
        if not output.overflow:  # exited: read the rest of what it printed, unless a descendant holds stdout
            await _wait(output.out_closed, PIPE_GRACE_S)
    finally:
        _kill_group(pgid)  # overflow, timeout, cancellation, or exit: nothing of it stays behind
        try:
            await _wait(output.exited, KILL_WAIT_S)
            await _wait(output.err_closed, PIPE_GRACE_S)
        finally:
            returncode = transport.get_returncode()
            transport.close()  # closes our ends of pipes a descendant outside the group still holds
    return output, returncode


async def query_command(source: HostSource, clock: Callable[[], float]) -> HostReport:
    args = argv(source)
    output, returncode = await _run(args)
    if output.overflow:
        raise RuntimeError(f"{args[0]} printed more than {MAX_REPORT_BYTES} bytes, the most a session list "
                           "may be; it was stopped and its output dropped")
    if returncode != 0:
        lines = bytes(output.err).decode(errors="replace").strip().splitlines()
        last = lines[-1:] or ["(nothing on stderr)"]
        raise RuntimeError(f"{args[0]} exited with {returncode}: {last[0][:200]}")
    return parse_report(source.server, bytes(output.out), clock())
