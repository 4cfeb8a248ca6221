"""Hostile and ordinary clients in bulk, on loopback, bounded in count and time.

Raw non-blocking sockets on the test's event loop (cheaper than streams: the test process must
outpace the balancer on the same two cores). Each client kind returns what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from rdpbalancer.proto.builders import build_connection_request

LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


async def _connect(address: tuple[str, int], source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the balancer sent until it closed (raises TimeoutError if it never does)."""
    loop, got = asyncio.get_running_loop(), bytearray()
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                data = await loop.sock_recv(sock, 4096)
            except ConnectionResetError:
                return bytes(got)
            if not data:
                return bytes(got)
            got += data


async def logon(address: tuple[str, int], source: str, user: str, timeout_s: float = 10.0) -> str:
    """A client that behaves: its CR, the server's confirm, then a clean close. 'ok' or 'refused'."""
    loop = asyncio.get_running_loop()
    sock = await _connect(address, source)
    try:
        await loop.sock_sendall(sock, build_connection_request(cookie=user.encode()))
        async with asyncio.timeout(timeout_s):
            data = await loop.sock_recv(sock, 64)
        return "ok" if data[:1] == b"\x03" else "refused"
    except ConnectionResetError:
        return "refused"
    finally:
        sock.close()


async def silent(address: tuple[str, int], source: str, timeout_s: float) -> float:
    """Connects and sends nothing; seconds until the balancer closed it."""
    started = time.monotonic()
    sock = await _connect(address, source)
    try:
        await _until_closed(sock, timeout_s)
    finally:
        sock.close()
    return time.monotonic() - started


async def trickle(address: tuple[str, int], source: str, interval_s: float, timeout_s: float) -> float:
    """Sends a real CR one byte per `interval_s`; seconds until the balancer closed it."""
    loop, started = asyncio.get_running_loop(), time.monotonic()
    sock = await _connect(address, source)
    try:
        async with asyncio.timeout(timeout_s):
            for byte in build_connection_request(cookie=b"slowloris"):
                try:
                    await loop.sock_sendall(sock, bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                await asyncio.sleep(interval_s)
            await _until_closed(sock, timeout_s)
    finally:
        sock.close()
    return time.monotonic() - started


async def junk(address: tuple[str, int], source: str, rng: random.Random) -> str:
    loop = asyncio.get_running_loop()
    sock = await _connect(address, source)
    try:
        await loop.sock_sendall(sock, bytes([3, 0]) + rng.randbytes(rng.randrange(2, 60)))
        await _until_closed(sock, 10.0)
        return "closed"
    except (BrokenPipeError, ConnectionResetError):
        return "closed"
    finally:
        sock.close()


async def reset(address: tuple[str, int], source: str, user: str) -> str:
    """Half a CR, then a reset."""
    loop = asyncio.get_running_loop()
    sock = await _connect(address, source)
    try:
        cr = build_connection_request(cookie=user.encode())
        await loop.sock_sendall(sock, cr[: len(cr) // 2])
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        sock.close()
    return "reset"


async def bounded(jobs: Iterable[Callable[[], object]], concurrency: int, deadline_s: float) -> Counter[str]:
    """Run `jobs` (coroutine factories) `concurrency` at a time; outcome names counted
    (exceptions by class name). Stops at `deadline_s` (TimeoutError)."""
    results: Counter[str] = Counter()
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            try:
                outcome = await job()  # type: ignore[misc]
                results[outcome if isinstance(outcome, str) else "done"] += 1
            except Exception as exc:
                results[type(exc).__name__] += 1

    async with asyncio.timeout(deadline_s):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class Peak:
    """`async with Peak(pid) as peak:` samples the process's RSS (KiB) and open fds every 0.1 s;
    `peak.rss` / `peak.fds` are the highest seen, `base_rss` / `base_fds` those at the start."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base_rss, self.base_fds = rss_kib(pid), open_fds(pid)
        self.rss, self.fds = self.base_rss, self.base_fds
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Peak:
        self._task = asyncio.ensure_future(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._take()

    def _take(self) -> None:
        self.rss = max(self.rss, rss_kib(self.pid))
        self.fds = max(self.fds, open_fds(self.pid))

    async def _sample(self) -> None:
        while True:
            self._take()
            await asyncio.sleep(0.1)
