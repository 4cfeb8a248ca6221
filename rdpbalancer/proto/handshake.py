"""Sans-IO readers for the first packet of each direction (h11 style).

Feed bytes with ``receive_data()`` (``b""`` means EOF) and pull with
``next_event()``, which returns ``NEED_DATA`` until one whole TPKT packet is in,
then the parsed event. Bytes after that packet are kept in ``trailing_data``
(and later ``receive_data()`` calls append there): they must be forwarded,
never dropped.

States: reading -> done (``next_event()`` keeps returning the same event) or
reading -> failed (``next_event()`` re-raises the same ProtocolError; further
data is discarded). Every check runs on the bytes already present, in byte
order, so a non-RDP peer is rejected from its first byte, and the verdict is
the same however the input is fragmented. Data after EOF is a caller bug
(RuntimeError), not a protocol error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from .confirm import (
    ConnectionConfirm,
    check_connection_confirm_fixed,
    parse_framed_connection_confirm,
)
from .constants import MAX_CONNECTION_CONFIRM_BYTES, MAX_CONNECTION_REQUEST_BYTES, X224_HEADER_END
from .errors import EOF, TRUNCATED, ProtocolError
from .framing import tpkt_length
from .request import (
    ConnectionRequest,
    check_connection_request_fixed,
    parse_framed_connection_request,
)

_MAX_TPKT_LENGTH: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class NeedData:
    """More bytes are needed before the packet is complete."""


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class ConnectionRequestReceived:
    request: ConnectionRequest


@dataclass(frozen=True, slots=True)
class ConnectionConfirmReceived:
    confirm: ConnectionConfirm


EventT = TypeVar("EventT", ConnectionRequestReceived, ConnectionConfirmReceived)


class _FirstPacketReader(ABC, Generic[EventT]):
    """Buffers one TPKT packet of at most ``max_size`` bytes and hands it to ``_parse``."""

    __slots__ = ("_buffer", "_eof", "_error", "_event", "_max_size", "_trailing")

    def __init__(self, max_size: int) -> None:
        if not X224_HEADER_END <= max_size <= _MAX_TPKT_LENGTH:
            raise ValueError(f"max_size {max_size} is not in {X224_HEADER_END}..{_MAX_TPKT_LENGTH}")
        self._max_size = max_size
        self._buffer = b""  # bytes, not bytearray: one whole chunk is then parsed without a copy
        self._eof = False
        self._event: EventT | None = None
        self._error: ProtocolError | None = None
        self._trailing = b""

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the packet (empty until the event has been returned)."""
        return self._trailing

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` signals EOF (repeating it is harmless)."""
        if not data:
            self._eof = True
        elif self._eof:
            raise RuntimeError("receive_data() got data after EOF")
        elif self._event is not None:
            self._trailing += data
        elif self._error is None:
            self._buffer += data

    def next_event(self) -> EventT | NeedData:
        """The parsed event, or NEED_DATA; raises ProtocolError (the same one every call)."""
        if self._error is not None:
            raise self._error.with_traceback(None)  # do not grow its traceback on every call
        if self._event is not None:
            return self._event
        try:
            return self._advance()
        except ProtocolError as err:
            self._error = err
            self._buffer = b""
            raise

    def _advance(self) -> EventT | NeedData:
        buffer = self._buffer
        length = tpkt_length(buffer, self._max_size)
        if length is not None:
            self._check_fixed_part(buffer, length)
            if len(buffer) >= length:
                return self._complete(buffer, length)
        if self._eof:
            if not buffer:
                raise ProtocolError(EOF, "connection closed before any byte was received")
            raise ProtocolError(TRUNCATED, f"connection closed after {len(buffer)} bytes of the packet")
        return NEED_DATA

    def _complete(self, buffer: bytes, length: int) -> EventT:
        event = self._parse(buffer[:length])
        self._trailing = buffer[length:]
        self._buffer = b""
        self._event = event
        return event

    @abstractmethod
    def _check_fixed_part(self, buffer: bytes, length: int) -> None: ...

    @abstractmethod
    def _parse(self, packet: bytes) -> EventT: ...


class ClientHandshake(_FirstPacketReader[ConnectionRequestReceived]):
    """Reads the client's X.224 Connection Request ([MS-RDPBCGR] 2.2.1.1)."""

    __slots__ = ()

    def __init__(self, max_size: int = MAX_CONNECTION_REQUEST_BYTES) -> None:
        super().__init__(max_size)

    def _check_fixed_part(self, buffer: bytes, length: int) -> None:
        check_connection_request_fixed(buffer, length)

    def _parse(self, packet: bytes) -> ConnectionRequestReceived:
        return ConnectionRequestReceived(parse_framed_connection_request(packet))


class ServerHandshake(_FirstPacketReader[ConnectionConfirmReceived]):
    """Reads the server's X.224 Connection Confirm ([MS-RDPBCGR] 2.2.1.2)."""

    __slots__ = ()

    def __init__(self, max_size: int = MAX_CONNECTION_CONFIRM_BYTES) -> None:
        super().__init__(max_size)

    def _check_fixed_part(self, buffer: bytes, length: int) -> None:
        check_connection_confirm_fixed(buffer, length)

    def _parse(self, packet: bytes) -> ConnectionConfirmReceived:
        return ConnectionConfirmReceived(parse_framed_connection_confirm(packet))
