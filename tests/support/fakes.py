"""Fake RDP session hosts and clients on real loopback sockets.

A FakeRdpServer reads a real X.224 Connection Request with the project's parser, answers a
Connection Confirm, then echoes bytes back, except that the 4 bytes b"WHO?" are answered with
the server's name and a newline: a client learns where it landed without any side channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from rdpbalancer.proto import (
    PROTOCOL_SSL,
    ClientHandshake,
    ConnectionRequestReceived,
    ProtocolError,
    build_connection_confirm,
    build_connection_request,
)

WHO = b"WHO?"
IO_TIMEOUT_S = 10.0


@dataclass
class FakeRdpServer:
    """`mode`: "rdp" (answer a CC, then echo), "silent" (accept, never answer), "reset" (accept,
    then reset), "garbage" (answer bytes that are not a CC). May be changed while running."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "rdp"
    cookies: list[bytes | None] = field(default_factory=list)  # every CR seen, in order
    active: int = 0
    accepted: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    cr_seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeRdpServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop_listening(self) -> None:
        """Close the listening socket only: live sessions go on (a host that stopped accepting)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def crash(self) -> None:
        """A host that reboots: it stops listening and its sessions end (listen_again: back, empty)."""
        await self.stop_listening()
        for w in list(self._writers):
            w.close()

    async def listen_again(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            writer.transport.abort()
            return
        self.active += 1
        self._writers.add(writer)
        try:
            rest = await self._handshake(reader, writer)
            if rest is not None:
                await self._echo(rest, reader, writer)
        except (OSError, ProtocolError, asyncio.IncompleteReadError):  # resets, ENOTCONN on write_eof
            pass
        finally:
            self.active -= 1
            self._writers.discard(writer)
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        hs = ClientHandshake()
        while True:
            data = await reader.read(4096)
            hs.receive_data(data)
            event = hs.next_event()
            if isinstance(event, ConnectionRequestReceived):
                if self.mode == "silent":
                    await reader.read()  # until the peer gives up
                    return None
                if self.mode == "garbage":
                    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    return None
                self.cookies.append(event.request.cookie)
                self.cr_seen.set()
                writer.write(build_connection_confirm(PROTOCOL_SSL))
                return hs.trailing_data
            if not data:
                return None

    async def _echo(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = first
        while True:
            if data:
                writer.write((self.name.encode() + b"\n") if data == WHO else data)
                await writer.drain()
            data = await reader.read(65536)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return


async def start_farm(*names: str) -> list[FakeRdpServer]:
    return [await FakeRdpServer(n).start() for n in names]


async def read_tpkt(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    length = int.from_bytes(header[2:4], "big")
    return header + await reader.readexactly(length - 4)


@dataclass
class RdpClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    confirm: bytes
    server: str

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def rdp_connect(port: int, user: str | bytes | None, host: str = "127.0.0.1",
                      local_host: str | None = None) -> RdpClient:
    """Connect through the balancer as `user`; returns once we know which server answered."""
    async with asyncio.timeout(IO_TIMEOUT_S):
        local = (local_host, 0) if local_host else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        try:
            cookie = user.encode() if isinstance(user, str) else user
            writer.write(build_connection_request(cookie=cookie))
            confirm = await read_tpkt(reader)
            writer.write(WHO)
            name = (await reader.readline()).decode().strip()
        except BaseException:
            writer.transport.abort()
            raise
        return RdpClient(reader, writer, confirm, name)


async def where(port: int, user: str | bytes | None, **kw: str) -> str:
    client = await rdp_connect(port, user, **kw)
    await client.close()
    return client.server


async def was_cut(reader: asyncio.StreamReader, timeout_s: float = IO_TIMEOUT_S) -> bool:
    """True when the connection ends (EOF or reset) within the timeout, with no more data."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s) == b""
    except ConnectionResetError:
        return True
