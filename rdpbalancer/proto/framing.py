"""TPKT header and X.224 class 0 fixed part, checked on whatever prefix has arrived.

Every check looks only at bytes already received, so a peer that is not speaking
RDP (an HTTP request, a TLS ClientHello, a port scanner) is rejected from its
first byte or two instead of after a handshake timeout.

Framing trusts the TPKT length ([T.123] section 8), never the X.224 length
indicator: the LI is one byte and FreeRDP lets it wrap for long cookies (see
``request.py``). The LI is compared, not used.
"""

from __future__ import annotations

from .constants import TPKT_HEADER_BYTES, TPKT_VERSION, X224_HEADER_END
from .errors import (
    BAD_CLASS,
    BAD_TPKT_LENGTH,
    BAD_TPKT_RESERVED,
    EXTRA_DATA,
    NOT_TPKT,
    TOO_LARGE,
    TRUNCATED,
    ProtocolError,
)

_X224_CODE_OFFSET = 5
_X224_CLASS_OFFSET = 10
# TPKT header + LI + TPDU code: enough to tell which TPDU it is (an X.224 Data
# TPDU is only 3 bytes). CR and CC need the full 7-byte fixed part, checked
# after the code so that a wrong TPDU is reported as such.
_MIN_TPDU_PACKET = _X224_CODE_OFFSET + 1


def _first_byte_hint(first: int) -> str:
    if first == 0x16:
        return " (looks like a TLS handshake: the client speaks TLS before X.224)"
    if 0x41 <= first <= 0x5A:
        return " (looks like a text protocol such as HTTP)"
    return ""


def tpkt_length(buf: bytes | bytearray, max_size: int) -> int | None:
    """Check the TPKT header prefix in ``buf``; return the packet length once known.

    Raises ProtocolError as soon as the bytes present prove the header invalid,
    including a declared length above ``max_size`` (checked from the high byte on).
    """
    available = len(buf)
    if available == 0:
        return None
    if buf[0] != TPKT_VERSION:
        raise ProtocolError(
            NOT_TPKT, f"first byte is 0x{buf[0]:02x}, not TPKT version 3{_first_byte_hint(buf[0])}"
        )
    if available >= 2 and buf[1] != 0:
        raise ProtocolError(BAD_TPKT_RESERVED, f"TPKT reserved byte is 0x{buf[1]:02x}, not 0")
    if available >= 3 and buf[2] << 8 > max_size:
        raise ProtocolError(
            TOO_LARGE, f"TPKT length is at least {buf[2] << 8}, above the {max_size}-byte cap"
        )
    if available < TPKT_HEADER_BYTES:
        return None
    length = (buf[2] << 8) | buf[3]
    if length > max_size:
        raise ProtocolError(TOO_LARGE, f"TPKT length {length} is above the {max_size}-byte cap")
    if length < _MIN_TPDU_PACKET:
        raise ProtocolError(BAD_TPKT_LENGTH, f"TPKT length {length} leaves no room for an X.224 TPDU")
    return length


def exact_packet_length(packet: bytes, max_size: int) -> int:
    """Check that ``packet`` holds exactly one whole TPKT packet; return its length."""
    length = tpkt_length(packet, max_size)
    if length is None or len(packet) < length:
        raise ProtocolError(TRUNCATED, f"{len(packet)} bytes, shorter than the TPKT header or length")
    if len(packet) > length:
        raise ProtocolError(EXTRA_DATA, f"{len(packet) - length} bytes after the {length}-byte TPKT packet")
    return length


def check_x224_fixed(buf: bytes | bytearray, length: int, code: int, code_kind: str, name: str) -> None:
    """Check the X.224 TPDU code, room for the fixed part, and class ([X.224] 13.3, 13.4).

    ``length`` is the TPKT length, already known; ``buf`` may hold less or more.

    The code byte must be exactly ``code`` (CDT 0, as class 0 requires). Only the
    class nibble of the class-option byte is checked: the option bits mean
    nothing in class 0 and the server receives the packet verbatim anyway.
    DST-REF and SRC-REF are not checked for the same reason.
    """
    available = len(buf)
    if available <= _X224_CODE_OFFSET:
        return  # checks run in byte order, so the verdict never depends on fragmentation
    if buf[_X224_CODE_OFFSET] != code:
        found = buf[_X224_CODE_OFFSET]
        raise ProtocolError(code_kind, f"X.224 TPDU code is 0x{found:02x}, not {name} (0x{code:02x})")
    if length < X224_HEADER_END:
        raise ProtocolError(BAD_TPKT_LENGTH, f"TPKT length {length} is too small for an X.224 {name} (11)")
    if available > _X224_CLASS_OFFSET and buf[_X224_CLASS_OFFSET] & 0xF0:
        found = buf[_X224_CLASS_OFFSET] >> 4
        raise ProtocolError(BAD_CLASS, f"X.224 class is {found}, RDP uses class 0")
