"""The channel between two processes of this program (the primary and a worker; the old and the
new process of a handoff): length-prefixed pickles on a socketpair.

Pickle is safe here: both ends are this program, the socketpair is created by the parent and
inherited by its own child, and nothing else can reach it. Each message is a frozen dataclass of
the channel's own messages module (workers/messages.py, handoff/messages.py), dispatched with
`match` in one place per side.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a stats push with every live session's counters fits easily

Message = Any  # one of the channel's message dataclasses


class ChannelError(Exception):
    pass


class Channel(asyncio.Protocol):
    """One end of the socketpair. `on_message` is called for each message, `on_lost` once."""

    def __init__(self, on_message: Callable[[Message], None], on_lost: Callable[[Exception | None], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, message: Message) -> None:
        if self.transport is None or self.closed or self.transport.is_closing():
            return  # the other end is gone; on_lost tells whoever cares
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(_HEADER.pack(len(body)) + body)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            if size > MAX_MESSAGE_BYTES:
                self._fail(ChannelError(f"message of {size} bytes"))
                return
            end = offset + _HEADER.size + size
            if len(buffer) < end:
                break
            message = pickle.loads(memoryview(buffer)[offset + _HEADER.size:end])
            offset = end
            self.on_message(message)
        del buffer[:offset]

    def _fail(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost(exc)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
