"""The backend connect (relay/sockets.connect_raw): a non-blocking connect on real loopback
sockets, without uvloop's resolver threads, as a future with its own deadline and cancel, with
the errors people read; the socket is closed in every outcome but success."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rdpbalancer.netaddr import describe_os_error
from rdpbalancer.relay.sockets import connect_raw
from tests.support.balancer import wait_until


async def test_it_connects_to_a_listener_on_ipv4_and_ipv6() -> None:
    loop = asyncio.get_running_loop()
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen()
            sock = await connect_raw(loop, host, listener.getsockname()[1], 5)
            try:
                assert sock.getpeername()[:2] == listener.getsockname()[:2]
                assert sock.getblocking() is False
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            finally:
                sock.close()


async def test_a_refused_connect_says_connection_refused() -> None:
    with socket.socket() as bound, pytest.raises(OSError) as info:  # bound, not listening: held, and refused
        bound.bind(("127.0.0.1", 0))
        await connect_raw(asyncio.get_running_loop(), "127.0.0.1", bound.getsockname()[1], 5)
    assert info.value.errno == errno.ECONNREFUSED and describe_os_error(info.value) == "Connection refused"


@contextlib.asynccontextmanager
async def _full_listener() -> AsyncIterator[int]:
    """A listener's port whose accept queue is full: the kernel drops further SYNs (they hang)."""
    with socket.socket() as listener, contextlib.ExitStack() as fillers:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(4):  # backlog 0 still queues one or two connections
            filler = fillers.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        port = listener.getsockname()[1]
        # with backlog 0, one connection waiting to be accepted fills it
        await wait_until(lambda: _accept_queue(port) >= 1, 5.0, 0.005,
                         describe=lambda: f"no connection reached the accept queue of port {port}")
        yield port


def _accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the IPv4 listener on `port` (the rx_queue of a
    LISTEN row in /proc/net/tcp, `ss -ltn`'s Recv-Q)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return int(fields[4].split(":")[1], 16)
    return 0


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_connect_that_hangs_fails_with_timeout_and_closes_its_socket() -> None:
    async with _full_listener() as port:
        before = _open_fds()
        future = connect_raw(asyncio.get_running_loop(), "127.0.0.1", port, 0.3)
        with pytest.raises(TimeoutError):
            await future
        assert _open_fds() == before


async def test_cancelling_a_connect_closes_its_socket() -> None:
    async with _full_listener() as port:
        before = _open_fds()
        future = connect_raw(asyncio.get_running_loop(), "127.0.0.1", port, 30)
        await asyncio.sleep(0.05)
        assert not future.done() and _open_fds() == before + 1
        future.cancel()
        await asyncio.sleep(0)
        assert _open_fds() == before


async def test_a_host_name_is_resolved_and_connected() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sock = await connect_raw(asyncio.get_running_loop(), "localhost", listener.getsockname()[1], 5)
        try:
            assert sock.getpeername()[1] == listener.getsockname()[1]
        finally:
            sock.close()
