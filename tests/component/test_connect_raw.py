"""The splice relay's backend connect (relay/sockets.connect_raw): a non-blocking connect on real
loopback sockets, without uvloop's resolver threads, with the errors people read."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from rdpbalancer.netaddr import describe_os_error
from rdpbalancer.relay.sockets import connect_raw
from tests.support.balancer import free_port


async def test_it_connects_to_a_listener_on_ipv4_and_ipv6() -> None:
    loop = asyncio.get_running_loop()
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen()
            sock = await connect_raw(loop, host, listener.getsockname()[1])
            try:
                assert sock.getpeername()[:2] == listener.getsockname()[:2]
                assert sock.getblocking() is False
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            finally:
                sock.close()


async def test_a_refused_connect_says_connection_refused() -> None:
    with pytest.raises(OSError) as info:
        await connect_raw(asyncio.get_running_loop(), "127.0.0.1", free_port())
    assert info.value.errno == errno.ECONNREFUSED and describe_os_error(info.value) == "Connection refused"
