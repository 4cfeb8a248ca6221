"""The same conformance tests for both relays: the Protocol copy relay and the os.splice relay.

Ordering, large and tiny writes, back-pressure, half-close and reset in each direction, many
concurrent sessions. Each backend is a small scripted server behind a real Connection Confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from rdpbalancer.proto import PROTOCOL_SSL, ClientHandshake, ConnectionRequestReceived, build_connection_confirm
from tests.support.balancer import farm_config, wait_until
from tests.support.fakes import rdp_connect

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
IO_S = 10.0


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    hs = ClientHandshake()
    while not isinstance(hs.next_event(), ConnectionRequestReceived):
        hs.receive_data(await reader.read(4096))
    writer.write(build_connection_confirm(PROTOCOL_SSL))
    # the WHO? probe of rdp_connect: answer with a name
    assert hs.trailing_data == b"" or hs.trailing_data == b"WHO?"
    if hs.trailing_data == b"":
        assert await reader.readexactly(4) == b"WHO?"
    writer.write(b"S\n")


@contextlib.asynccontextmanager
async def relay(tmp_path: Path, mode: str, script: Script) -> AsyncIterator[tuple[Balancer, list[object]]]:
    results: list[object] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handshake(reader, writer)
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            results.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    text = farm_config([("S", address, 1)], tmp_path / "s.db", balancer_extra=f'relay = "{mode}"')
    bal = Balancer(parse_config(text))
    await bal.start()
    try:
        yield bal, results
    finally:
        await bal.stop()
        server.close()


MODES = ["copy", "splice"]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()


@pytest.mark.parametrize("mode", MODES)
async def test_mode_is_used(tmp_path: Path, mode: str) -> None:
    async with relay(tmp_path, mode, echo) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        session = next(iter(bal.ctx.sessions.values()))
        assert (session._pump is not None) == (mode == "splice")
        await client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_large_transfer_both_ways_in_order(tmp_path: Path, mode: str) -> None:
    async with relay(tmp_path, mode, echo) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        blob = os.urandom(4 * 1024 * 1024)

        async def send() -> None:
            for i in range(0, len(blob), 100_003):  # odd sizes: chunk boundaries move
                client.writer.write(blob[i:i + 100_003])
                await client.writer.drain()
            client.writer.write_eof()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(client.reader.read(-1), IO_S * 3)
        await sender
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        await client.close()
        await wait_until(lambda: not bal.ctx.sessions, IO_S)
        assert bal.ctx.stats.bytes_up >= len(blob) and bal.ctx.stats.bytes_down >= len(blob)


@pytest.mark.parametrize("mode", MODES)
async def test_tiny_writes_keep_their_order(tmp_path: Path, mode: str) -> None:
    async with relay(tmp_path, mode, echo) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        for i in range(300):
            b = bytes([i % 256])
            client.writer.write(b)
            assert await asyncio.wait_for(client.reader.readexactly(1), IO_S) == b
        await client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_slow_reader_does_not_grow_memory(tmp_path: Path, mode: str) -> None:
    release = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # does not read until told
        while await reader.read(65536):
            pass

    async with relay(tmp_path, mode, sink) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        chunk = b"x" * 65536
        sent = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while sent < 64 * 1024 * 1024:
                    client.writer.write(chunk)
                    await client.writer.drain()
                    sent += len(chunk)
        session = next(iter(bal.ctx.sessions.values()))
        # the relay took only what kernel buffers and one pipe / one transport buffer hold
        assert sent < 32 * 1024 * 1024
        assert session.bytes_up < 16 * 1024 * 1024
        release.set()
        await client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_client_half_close(tmp_path: Path, mode: str) -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(-1)  # until the client's EOF
        writer.write(b"got %d" % len(data))
        await writer.drain()

    async with relay(tmp_path, mode, answer_after_eof) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        client.writer.write(b"z" * 100_000)
        client.writer.write_eof()
        assert await asyncio.wait_for(client.reader.read(-1), IO_S) == b"got 100000"
        await client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_server_half_close(tmp_path: Path, mode: str) -> None:
    received: list[int] = []

    async def bye_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.write_eof()
        received.append(len(await reader.read(-1)))

    async with relay(tmp_path, mode, bye_first) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        assert await asyncio.wait_for(client.reader.read(-1), IO_S) == b"bye"
        client.writer.write(b"y" * 200_000)  # the other direction still works
        client.writer.write_eof()
        await wait_until(lambda: bool(received), IO_S)
        assert received == [200_000]
        await client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_client_reset_reaches_the_server(tmp_path: Path, mode: str) -> None:
    async with relay(tmp_path, mode, echo) as (bal, results):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        client.writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.writer.transport.abort()  # RST
        await wait_until(lambda: not bal.ctx.sessions, IO_S)
        await wait_until(lambda: bool(results), IO_S)  # the server saw the reset (or EOF)
        assert bal.router.connections["S"] == 0


@pytest.mark.parametrize("mode", MODES)
async def test_server_reset_reaches_the_client(tmp_path: Path, mode: str) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with linger 0: a real RST

    async with relay(tmp_path, mode, reset) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        client.writer.write(b"hello")
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(client.reader.read(-1), IO_S) == b""
        await wait_until(lambda: not bal.ctx.sessions, IO_S)
        await client.close()
        assert bal.router.connections["S"] == 0


@pytest.mark.parametrize("mode", MODES)
async def test_many_concurrent_sessions(tmp_path: Path, mode: str) -> None:
    async with relay(tmp_path, mode, echo) as (bal, _):
        port = bal.addresses[0][1]

        async def one(i: int) -> bytes:
            client = await rdp_connect(port, f"user{i}")
            payload = f"session {i} ".encode() * 50
            client.writer.write(payload)
            got = await asyncio.wait_for(client.reader.readexactly(len(payload)), IO_S)
            await client.close()
            return got == payload

        assert all(await asyncio.gather(*(one(i) for i in range(200))))
        await wait_until(lambda: not bal.ctx.sessions, IO_S)
        assert not bal.router.connections


async def test_accepted_client_sockets_inherit_nodelay_and_keepalive(tmp_path: Path) -> None:
    async with relay(tmp_path, "copy", echo) as (bal, _):
        client = await rdp_connect(bal.addresses[0][1], "alice")
        session = next(iter(bal.ctx.sessions.values()))
        sock = session.client.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        await client.close()
