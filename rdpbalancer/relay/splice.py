"""Zero-copy relay on Linux: bytes move socket -> pipe -> socket with os.splice, never into Python.

One `SplicePump` per session, two `Direction`s per pump, driven by the event loop's reader and
writer callbacks on the raw file descriptors:

    readable(src) -> splice src->pipe -> splice pipe->dst until the pipe is empty
                     dst full (EAGAIN): stop reading src, wait until dst is writable, then drain
                     src EOF: drain, then shutdown(dst, SHUT_WR)   (half-close passed on)

Back-pressure is the kernel's: while a pipe holds data, its source is not read, so a slow reader
holds at most one pipe's worth (64 KiB) per direction. Pipes are borrowed from a pool only while
they hold data, so an idle session costs its two sockets and nothing else. A reset on one side
resets the other (SO_LINGER 0); what sits in a pipe at a normal close is flushed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
from collections.abc import Callable

PIPE_SIZE = 1 << 20  # 1 MiB (Linux's default pipe-max-size): bulk transfers need 16x fewer wake-ups
SPLICE_CHUNK = PIPE_SIZE  # at most one pipe's capacity per call
MAX_ROUNDS_PER_WAKEUP = 4  # read again right away while bulk data keeps coming, before yielding to the loop
# a read this large suggests more is queued: try again at once. Smaller (interactive) reads return
# to the loop, sparing the failed splice (EAGAIN) that would cost small ping-pong frames ~40%.
BULK_READ_BYTES = 1 << 16
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
PIPE_POOL_MAX = 256  # idle pipe pairs kept for reuse; beyond that they are closed
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST instead of FIN

AVAILABLE = hasattr(os, "splice")


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SMALL_PIPE_SIZE = 1 << 16  # Linux's default pipe: what a pipe gets once the 1 MiB ones would overdraw
PIPE_BUDGET_SHARE = 0.75  # of fs.pipe-user-pages-soft: the rest is left to the user's other pipes


def user_pipe_budget(processes: int = 1) -> int | None:
    """Pipe buffer pages this process may take before the kernel starts giving its user's new
    pipes 2 pages (8 KiB) and refusing larger ones: fs.pipe-user-pages-soft counts every pipe
    of the user, so an unprivileged service (16384 pages = 64 MiB by default) holds only 64 pipes
    of 1 MiB; `processes` of one user share it. None: no limit (root, or the soft limit is off)."""
    if os.geteuid() == 0:
        return None  # CAP_SYS_RESOURCE/CAP_SYS_ADMIN: the per-user limits do not apply
    try:
        soft = int(open("/proc/sys/fs/pipe-user-pages-soft").read())  # noqa: SIM115 - one read
    except (OSError, ValueError):
        return None
    return int(soft * PIPE_BUDGET_SHARE / max(1, processes)) if soft > 0 else None


class PipePool:
    """Pipes lent to the pumps while they hold data. Each is made 1 MiB while the user's pipe
    budget (`user_pipe_budget`) allows it, else 64 KiB, so a service account never falls to
    the kernel's 8 KiB pipes; the pages of every pipe made and not closed are counted."""

    def __init__(self, limit: int = PIPE_POOL_MAX, page_budget: int | None = -1, processes: int = 1) -> None:
        self._free: list[tuple[int, int]] = []
        self.limit = limit
        self.page_budget = user_pipe_budget(processes) if page_budget == -1 else page_budget
        self.pages = 0  # pages of the pipes this pool made and has not closed
        self._sizes: dict[int, int] = {}  # write fd -> its pipe's pages

    def get(self) -> tuple[int, int]:
        if self._free:
            return self._free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        size = PIPE_SIZE
        if self.page_budget is not None and self.pages + PIPE_SIZE // PAGE > self.page_budget:
            size = SMALL_PIPE_SIZE
        with contextlib.suppress(OSError):  # a lower pipe-max-size: keep the default 64 KiB
            fcntl.fcntl(w, F_SETPIPE_SZ, size)
        pages = fcntl.fcntl(w, F_GETPIPE_SZ) // PAGE
        self._sizes[w] = pages
        self.pages += pages
        return r, w

    def put(self, pipe: tuple[int, int]) -> None:
        """Return an EMPTY pipe; a pipe with data in it must be discarded instead."""
        over_budget = self.page_budget is not None and self.pages > self.page_budget
        if len(self._free) < self.limit and not over_budget:
            self._free.append(pipe)
        else:
            self.discard(pipe)

    def discard(self, pipe: tuple[int, int]) -> None:
        self.pages -= self._sizes.pop(pipe[1], 0)
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        while self._free:
            self.discard(self._free.pop())


class Direction:
    __slots__ = ("done", "dst", "dst_side", "eof", "loop", "nbytes", "pending", "pipe", "pool", "pump", "reading",
                 "src", "src_side", "waiting_writable")

    def __init__(self, pump: SplicePump, src: int, dst: int, src_side: str, dst_side: str) -> None:
        self.pump, self.src, self.dst = pump, src, dst
        self.src_side, self.dst_side = src_side, dst_side
        self.loop, self.pool = pump.loop, pump.pool
        self.pipe: tuple[int, int] | None = None
        self.pending = 0  # bytes sitting in the pipe
        self.nbytes = 0
        self.eof = self.done = self.reading = self.waiting_writable = False

    def start(self) -> None:
        self.reading = True
        self.loop.add_reader(self.src, self._readable)

    def stop(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src)
            self.reading = False
        if self.waiting_writable:
            self.loop.remove_writer(self.dst)
            self.waiting_writable = False
        if self.pipe is not None:
            if self.pending:
                self.pool.discard(self.pipe)  # data that can no longer be delivered
            else:
                self.pool.put(self.pipe)
            self.pipe, self.pending = None, 0

    def _readable(self) -> None:
        for _ in range(MAX_ROUNDS_PER_WAKEUP):
            pipe = self.pipe
            if pipe is None:
                pipe = self.pipe = self.pool.get()
            try:
                got = os.splice(self.src, pipe[1], SPLICE_CHUNK, None, None, SPLICE_FLAGS)  # positional: faster
            except BlockingIOError:
                return  # nothing more to read for now
            except OSError as exc:
                self.pump.fail(exc, self.src_side)
                return
            self.nbytes += got
            n = got
            if got and not self.pending:  # the common case: one splice out empties the pipe again
                try:
                    written = os.splice(pipe[0], self.dst, got, None, None, SPLICE_FLAGS)
                except OSError:
                    written = 0  # EAGAIN or an error: the general path below sorts it out
                if written == got:
                    self.pool.put(pipe)
                    self.pipe = None
                    if got < BULK_READ_BYTES:
                        return  # a small (interactive) read: the socket is drained
                    continue
                n = got - written
            if got == 0:
                self.eof = True
                self.loop.remove_reader(self.src)
                self.reading = False
            self.pending += n
            self._drain()
            if not self.reading or got < BULK_READ_BYTES:
                return  # EOF, back-pressure, closed; or a small (interactive) read: the socket is drained

    def _writable(self) -> None:
        self._drain()

    def _drain(self) -> None:
        assert self.pipe is not None
        while self.pending:
            try:
                self.pending -= os.splice(self.pipe[0], self.dst, self.pending, None, None, SPLICE_FLAGS)
            except BlockingIOError:
                self._wait_writable()
                return
            except OSError as exc:
                self.pump.fail(exc, self.dst_side)
                return
        self._emptied()

    def _wait_writable(self) -> None:
        if self.reading:  # back-pressure: the source waits while the pipe is full
            self.loop.remove_reader(self.src)
            self.reading = False
        if not self.waiting_writable:
            self.loop.add_writer(self.dst, self._writable)
            self.waiting_writable = True

    def _emptied(self) -> None:
        if self.pipe is not None:
            self.pool.put(self.pipe)
            self.pipe = None
        if self.waiting_writable:
            self.loop.remove_writer(self.dst)
            self.waiting_writable = False
        if self.eof:
            self.pump.shutdown_write(self.dst)
            self.done = True
            self.pump.direction_done()
        elif not self.reading:
            self.loop.add_reader(self.src, self._readable)
            self.reading = True


class SplicePump:
    """Relays between two connected, non-blocking sockets it owns (and closes at the end)."""

    def __init__(self, client: socket.socket, backend: socket.socket, pool: PipePool,
                 on_done: Callable[[int, int, str], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.client, self.backend = client, backend
        client_fd, backend_fd = client.fileno(), backend.fileno()
        self.up = Direction(self, client_fd, backend_fd, "client", "server")
        self.down = Direction(self, backend_fd, client_fd, "server", "client")
        self.on_done = on_done
        self.closed = False

    def start(self) -> None:
        self.up.start()
        self.down.start()

    def direction_done(self) -> None:
        if self.up.done and self.down.done:
            self._close("client and server closed")

    def fail(self, exc: OSError, side: str) -> None:
        """A reset or error on one side: reset the other side too, promptly."""
        reason = f"{side} error: {os.strerror(exc.errno) if exc.errno else exc}"
        self._reset_both()
        self._close(reason)

    def abort(self, reason: str) -> None:
        if not self.closed:
            self._reset_both()
            self._close(reason)

    def _reset_both(self) -> None:
        for sock in (self.client, self.backend):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)

    def shutdown_write(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            (self.client if fd == self.up.src else self.backend).shutdown(socket.SHUT_WR)

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.stop()
        self.down.stop()
        self.client.close()
        self.backend.close()
        self.on_done(self.up.nbytes, self.down.nbytes, reason)


def set_nonblocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
