"""RDP_NEG_* structures that follow the X.224 variable part ([MS-RDPBCGR] 2.2.1.1.1 - 2.2.1.2.2).

Strict on structure (types, lengths, nothing left over), because that is what
tells an RDP client from junk and decides where the packet ends. Lenient on
values: any ``flags`` and ``requestedProtocols`` bits are accepted and reported
(mstsc sets flags such as RESTRICTED_ADMIN_MODE_REQUIRED; newer clients add
protocol bits), and the SHOULD-level rules on the correlation id and its
reserved bytes are not enforced: the server receives the packet verbatim and
is the one to judge them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .constants import (
    CORRELATION_ID_BYTES,
    CORRELATION_INFO_BYTES,
    CORRELATION_INFO_PRESENT,
    NEG_STRUCT_BYTES,
    TYPE_RDP_CORRELATION_INFO,
    TYPE_RDP_NEG_FAILURE,
    TYPE_RDP_NEG_REQ,
    TYPE_RDP_NEG_RSP,
)
from .errors import BAD_CORRELATION_INFO, BAD_NEG_REQ, BAD_NEG_RSP, ProtocolError

# type (u8), flags (u8), length (u16 LE), requestedProtocols / selectedProtocol / failureCode (u32 LE)
_NEG_STRUCT: Final = struct.Struct("<BBHI")
# type (u8), flags (u8), length (u16 LE); then correlationId (16) and reserved (16)
_CORRELATION_HEADER: Final = struct.Struct("<BBH")


@dataclass(frozen=True, slots=True)
class NegotiationRequest:
    flags: int | None = None
    requested_protocols: int | None = None
    correlation_id: bytes | None = None


NO_NEGOTIATION_REQUEST: Final = NegotiationRequest()


@dataclass(frozen=True, slots=True)
class NegotiationResponse:
    neg_type: int | None = None
    flags: int | None = None
    selected_protocol: int | None = None
    failure_code: int | None = None


NO_NEGOTIATION_RESPONSE: Final = NegotiationResponse()


def parse_negotiation_request(packet: bytes, offset: int) -> NegotiationRequest:
    """Parse the optional RDP_NEG_REQ (+ RDP_NEG_CORRELATION_INFO) filling ``packet[offset:]``."""
    remaining = len(packet) - offset
    if remaining == 0:
        return NO_NEGOTIATION_REQUEST
    if packet[offset] != TYPE_RDP_NEG_REQ:
        raise ProtocolError(
            BAD_NEG_REQ, f"byte 0x{packet[offset]:02x} at offset {offset} is not an RDP_NEG_REQ (type 1)"
        )
    if remaining < NEG_STRUCT_BYTES:
        raise ProtocolError(BAD_NEG_REQ, f"RDP_NEG_REQ cut short: {remaining} of 8 bytes in the packet")
    _, flags, length, protocols = _NEG_STRUCT.unpack_from(packet, offset)
    if length != NEG_STRUCT_BYTES:
        raise ProtocolError(BAD_NEG_REQ, f"RDP_NEG_REQ length field is {length}, must be 8")
    offset += NEG_STRUCT_BYTES
    correlation_id = None
    if flags & CORRELATION_INFO_PRESENT:
        correlation_id = _parse_correlation_info(packet, offset)
        offset += CORRELATION_INFO_BYTES
    if offset != len(packet):
        raise ProtocolError(BAD_NEG_REQ, f"{len(packet) - offset} unexpected bytes after RDP_NEG_REQ")
    return NegotiationRequest(flags, protocols, correlation_id)


def _parse_correlation_info(packet: bytes, offset: int) -> bytes:
    """Return the 16-byte correlationId of the RDP_NEG_CORRELATION_INFO at ``offset`` (2.2.1.1.2)."""
    remaining = len(packet) - offset
    if remaining < CORRELATION_INFO_BYTES:
        raise ProtocolError(
            BAD_CORRELATION_INFO,
            f"CORRELATION_INFO_PRESENT is set but only {remaining} of 36 bytes follow RDP_NEG_REQ",
        )
    kind, _, length = _CORRELATION_HEADER.unpack_from(packet, offset)
    if kind != TYPE_RDP_CORRELATION_INFO or length != CORRELATION_INFO_BYTES:
        raise ProtocolError(
            BAD_CORRELATION_INFO, f"correlation info has type {kind} length {length}, expected 6 and 36"
        )
    start = offset + _CORRELATION_HEADER.size
    return packet[start : start + CORRELATION_ID_BYTES]


def parse_negotiation_response(packet: bytes, offset: int) -> NegotiationResponse:
    """Parse the optional RDP_NEG_RSP or RDP_NEG_FAILURE filling ``packet[offset:]`` (2.2.1.2)."""
    remaining = len(packet) - offset
    if remaining == 0:
        return NO_NEGOTIATION_RESPONSE
    if remaining != NEG_STRUCT_BYTES:
        raise ProtocolError(BAD_NEG_RSP, f"{remaining} bytes after the X.224 CC, expected 0 or 8")
    neg_type, flags, length, value = _NEG_STRUCT.unpack_from(packet, offset)
    if length != NEG_STRUCT_BYTES:
        raise ProtocolError(BAD_NEG_RSP, f"negotiation response length field is {length}, must be 8")
    if neg_type == TYPE_RDP_NEG_RSP:
        return NegotiationResponse(neg_type, flags, selected_protocol=value)
    if neg_type == TYPE_RDP_NEG_FAILURE:
        return NegotiationResponse(neg_type, flags, failure_code=value)
    raise ProtocolError(
        BAD_NEG_RSP, f"negotiation type {neg_type} is neither RDP_NEG_RSP (2) nor FAILURE (3)"
    )


def pack_negotiation(neg_type: int, flags: int, value: int) -> bytes:
    """An 8-byte RDP_NEG_REQ / RDP_NEG_RSP / RDP_NEG_FAILURE; ValueError on out-of-range fields."""
    if not 0 <= flags <= 0xFF or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"flags {flags} or value {value} out of range (u8, u32)")
    return _NEG_STRUCT.pack(neg_type, flags, NEG_STRUCT_BYTES, value)


def pack_correlation_info(correlation_id: bytes) -> bytes:
    """A 36-byte RDP_NEG_CORRELATION_INFO carrying ``correlation_id`` (16 bytes)."""
    if len(correlation_id) != CORRELATION_ID_BYTES:
        raise ValueError(f"correlation id must be 16 bytes, got {len(correlation_id)}")
    header = _CORRELATION_HEADER.pack(TYPE_RDP_CORRELATION_INFO, 0, CORRELATION_INFO_BYTES)
    return header + correlation_id + bytes(CORRELATION_INFO_BYTES - CORRELATION_ID_BYTES - len(header))
