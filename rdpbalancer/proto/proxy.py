"""The PROXY protocol header a TCP proxy sends before the client's bytes (HAProxy's
doc/proxy-protocol.txt: v1 text in section 2.1, v2 binary in section 2.2).

Sans-IO and stateless: ``parse_proxy_header(buf)`` looks at everything received so
far and returns None while more bytes are needed, a ``ProxyHeader`` once the header
is complete (``buf[header.length:]`` is what follows it, usually the X.224
Connection Request, and must be kept), or raises ``ProxyProtocolError``. Checks
run on the bytes present, in byte order, so junk is refused from its first byte
and the verdict does not depend on how the input was fragmented.

Decisions, and why:

* **Only configuration says whether a header is expected** (section 5): a
  listener that accepts PROXY must refuse a connection without one, and one that
  does not must never look for it, or any client could spoof its address.
  ``looks_like_proxy_header`` only serves to refuse early and explain why.
* **v1 is strict**: exactly ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` with
  single spaces, addresses of the declared family, decimal ports 0..65535
  without leading zeros (the spec forbids them, octal confusion), and printable
  US-ASCII only. ``PROXY UNKNOWN`` may carry anything printable before its CRLF,
  which is ignored as the spec says; a lone CR or LF, or a control byte, is
  refused. IPv6 scope ids (``fe80::1%eth0``) are refused: not an address format
  the spec allows.
* **v2**: version 2 and the LOCAL or PROXY command only. LOCAL (a health check
  from the proxy itself) ignores family and address block as the spec requires.
  PROXY with TCP over IPv4 or IPv6 (0x11, 0x21) gives addresses; the address
  block must be complete, and what follows it must be well-framed TLVs (type,
  16-bit length, value), whose values are not interpreted (PP2_TYPE_CRC32C is
  not verified). Every other valid family/transport (AF_UNSPEC, AF_UNIX, UDP)
  "falls back to the UNSPEC mode" as the spec asks: accepted, no address, the
  block skipped. A family nibble above 3 or a transport nibble above 2 is
  refused, as required.
* **Addresses are reported as given** (``str()`` of ``ipaddress``), so an
  IPv4-mapped IPv6 source stays IPv6; ports as integers.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final

from .errors import BAD_PROXY_V1, BAD_PROXY_V2, NOT_PROXY, PROXY_TOO_LARGE, ProxyProtocolError

V1_SIGNATURE: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

# Section 2.1: the longest line a receiver must accept, CRLF included, is
# "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".
MAX_PROXY_V1_BYTES: Final = 107
# Section 2.2 lets the 16-bit length reach 16 + 65535 bytes, but the header is
# sent "at once" and is "always smaller than an MSS". 536 is the default IPv4 MSS
# (RFC 1122 4.2.2.6): the 16-byte fixed part, the largest address block (AF_UNIX,
# 216) and 304 bytes of TLVs; cloud load balancers send one TLV well under 100
# bytes. This bounds what an unauthenticated peer makes us buffer before routing.
MAX_PROXY_V2_BYTES: Final = 536
MAX_PROXY_HEADER_BYTES: Final = max(MAX_PROXY_V1_BYTES, MAX_PROXY_V2_BYTES)

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    source: Address | None  # None: v2 LOCAL, v1 UNKNOWN, or a v2 family we do not read
    destination: Address | None
    length: int  # bytes of the header; buf[length:] belongs to the next protocol


def looks_like_proxy_header(buf: bytes | bytearray) -> bool:
    """False as soon as the first bytes match neither signature; True while they still could
    (an empty ``buf`` included). For refusing early, never for guessing: see the module doc."""
    return V1_SIGNATURE.startswith(buf[: len(V1_SIGNATURE)]) or V2_SIGNATURE.startswith(buf[: len(V2_SIGNATURE)])


def parse_proxy_header(buf: bytes | bytearray) -> ProxyHeader | None:
    """The PROXY header at the start of ``buf``: None while incomplete, else the header.

    Raises ProxyProtocolError (a ProtocolError) when the bytes present are not one.
    """
    data = bytes(buf[:MAX_PROXY_HEADER_BYTES])
    if not data:
        return None
    if V1_SIGNATURE.startswith(data[: len(V1_SIGNATURE)]):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        return _parse_v2(data)
    raise ProxyProtocolError(
        NOT_PROXY, f"first bytes {data[:8]!r} are not a PROXY protocol v1 or v2 signature{_hint(data[0])}"
    )


def _hint(first: int) -> str:
    if first == 0x03:
        return " (looks like TPKT: the client bypassed the proxy, or the proxy does not send PROXY headers)"
    if first == 0x16:
        return " (looks like a TLS handshake)"
    return ""


# --- version 1 (section 2.1) ---

_V1_PROTOCOLS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN")
_NOT_PRINTABLE: Final = re.compile(rb"[^\x20-\x7e]")
_PORT: Final = re.compile(r"0|[1-9][0-9]{0,4}")
_CR: Final = 0x0D
_LF: Final = 0x0A
_V1_TCP_FIELDS: Final = 5  # protocol, source, destination, source port, destination port


def _parse_v1(data: bytes) -> ProxyHeader | None:
    _check_v1_protocol_prefix(data[len(V1_SIGNATURE) :])
    end = _v1_line_end(data)
    if end is None:
        return None
    fields = data[len(V1_SIGNATURE) : end].decode("ascii").split(" ")
    if fields[0] == "UNKNOWN":
        return ProxyHeader(1, None, None, end + 2)  # the rest of the line is ignored (section 2.1)
    if fields[0] not in ("TCP4", "TCP6") or len(fields) != _V1_TCP_FIELDS:
        line = data[:end].decode("ascii")
        raise ProxyProtocolError(
            BAD_PROXY_V1, f"PROXY v1 line {line!r} is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' (single spaces)"
        )
    protocol, source, destination, source_port, destination_port = fields
    return ProxyHeader(
        1,
        (_v1_address(source, protocol, "source"), _v1_port(source_port, "source")),
        (_v1_address(destination, protocol, "destination"), _v1_port(destination_port, "destination")),
        end + 2,
    )


def _check_v1_protocol_prefix(rest: bytes) -> None:
    """Refuse as soon as the bytes after ``PROXY `` cannot start TCP4, TCP6 or UNKNOWN."""
    if not any(rest[: len(p)] == p[: len(rest)] for p in _V1_PROTOCOLS):
        raise ProxyProtocolError(BAD_PROXY_V1, f"PROXY v1 protocol {rest[:8]!r}... is not TCP4, TCP6 or UNKNOWN")


def _v1_line_end(data: bytes) -> int | None:
    """Offset of the CR of the line's CRLF, None if not there yet; refuses bytes that cannot be a line."""
    found = _NOT_PRINTABLE.search(data, 0, MAX_PROXY_V1_BYTES)
    if found is None:
        if len(data) >= MAX_PROXY_V1_BYTES:
            raise ProxyProtocolError(
                BAD_PROXY_V1, f"no CRLF in the first {MAX_PROXY_V1_BYTES} bytes of a PROXY v1 line"
            )
        return None
    end = found.start()
    if data[end] != _CR:
        raise ProxyProtocolError(
            BAD_PROXY_V1, f"byte 0x{data[end]:02x} at offset {end} of a PROXY v1 line is not printable US-ASCII"
        )
    if end + 2 > MAX_PROXY_V1_BYTES:
        raise ProxyProtocolError(BAD_PROXY_V1, f"PROXY v1 line is longer than {MAX_PROXY_V1_BYTES} bytes")
    if end + 1 == len(data):
        return None
    if data[end + 1] != _LF:
        raise ProxyProtocolError(BAD_PROXY_V1, f"CR at offset {end} of a PROXY v1 line is not followed by LF")
    return end


def _v1_address(text: str, protocol: str, name: str) -> str:
    family = "IPv4" if protocol == "TCP4" else "IPv6"
    try:
        if "%" in text:  # ipaddress accepts IPv6 scope ids; the spec's format has none
            raise ValueError(text)
        address = ipaddress.IPv4Address(text) if protocol == "TCP4" else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyProtocolError(
            BAD_PROXY_V1, f"PROXY v1 {name} address {text!r} is not an {family} address ({protocol})"
        ) from None
    return str(address)


def _v1_port(text: str, name: str) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise ProxyProtocolError(
            BAD_PROXY_V1, f"PROXY v1 {name} port {text!r} is not a decimal 0..65535 without leading zeros"
        )
    return int(text)


# --- version 2 (section 2.2) ---

_V2_FIXED_BYTES: Final = 16  # signature (12), version/command, family/transport, length (u16 BE)
_VERSION_COMMAND_OFFSET: Final = 12
_FAMILY_OFFSET: Final = 13
_V2_LENGTH: Final = struct.Struct(">H")
_V2_VERSION: Final = 0x2
_LOCAL: Final = 0x0
_PROXY: Final = 0x1
_MAX_FAMILY: Final = 0x3  # AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX
_MAX_TRANSPORT: Final = 0x2  # UNSPEC, STREAM, DGRAM
_TLV_HEADER: Final = struct.Struct(">BH")  # type, length of the value
# family/transport byte -> (address constructor, block layout); TCP only, the rest falls back to UNSPEC
_TCP_ADDRESSES: Final[dict[int, tuple[type[ipaddress.IPv4Address | ipaddress.IPv6Address], struct.Struct]]] = {
    0x11: (ipaddress.IPv4Address, struct.Struct(">4s4sHH")),
    0x21: (ipaddress.IPv6Address, struct.Struct(">16s16sHH")),
}


def _parse_v2(data: bytes) -> ProxyHeader | None:
    command = _v2_command(data)
    if len(data) < _V2_FIXED_BYTES:
        return None
    length = _V2_FIXED_BYTES + _V2_LENGTH.unpack_from(data, _V2_FIXED_BYTES - 2)[0]
    if length > MAX_PROXY_V2_BYTES:
        raise ProxyProtocolError(
            PROXY_TOO_LARGE, f"PROXY v2 header is {length} bytes, above the {MAX_PROXY_V2_BYTES}-byte cap"
        )
    if len(data) < length:
        return None
    if command == _LOCAL:
        return ProxyHeader(2, None, None, length)  # address block ignored, whatever it holds
    return _v2_addresses(data[_FAMILY_OFFSET], data[_V2_FIXED_BYTES:length], length)


def _v2_command(data: bytes) -> int | None:
    """Check the version/command byte, and the family byte for PROXY, if they have arrived."""
    if len(data) <= _VERSION_COMMAND_OFFSET:
        return None
    version_command = data[_VERSION_COMMAND_OFFSET]
    version, command = version_command >> 4, version_command & 0x0F
    if version != _V2_VERSION:
        raise ProxyProtocolError(BAD_PROXY_V2, f"PROXY v2 version is {version}, not 2 (byte 0x{version_command:02x})")
    if command not in (_LOCAL, _PROXY):
        raise ProxyProtocolError(BAD_PROXY_V2, f"PROXY v2 command is 0x{command:x}, neither LOCAL (0) nor PROXY (1)")
    if command == _PROXY and len(data) > _FAMILY_OFFSET:
        family = data[_FAMILY_OFFSET]
        if family >> 4 > _MAX_FAMILY or family & 0x0F > _MAX_TRANSPORT:
            raise ProxyProtocolError(
                BAD_PROXY_V2, f"PROXY v2 family/transport byte 0x{family:02x} is not a defined combination"
            )
    return command


def _v2_addresses(family: int, block: bytes, length: int) -> ProxyHeader:
    layout = _TCP_ADDRESSES.get(family)
    if layout is None:
        return ProxyHeader(2, None, None, length)  # AF_UNSPEC, AF_UNIX or UDP: the UNSPEC fallback
    address_type, addresses = layout
    if len(block) < addresses.size:
        raise ProxyProtocolError(
            BAD_PROXY_V2,
            f"PROXY v2 address block is {len(block)} bytes, family 0x{family:02x} needs {addresses.size}",
        )
    source, destination, source_port, destination_port = addresses.unpack_from(block)
    _check_tlvs(block[addresses.size :], _V2_FIXED_BYTES + addresses.size)
    return ProxyHeader(
        2, (str(address_type(source)), source_port), (str(address_type(destination)), destination_port), length
    )


def _check_tlvs(tlvs: bytes, start: int) -> None:
    """Each TLV must fit in the header; ``start`` is the header offset of ``tlvs``, for messages."""
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < _TLV_HEADER.size:
            raise ProxyProtocolError(
                BAD_PROXY_V2, f"PROXY v2 TLV at offset {start + offset} is cut: {len(tlvs) - offset} bytes left"
            )
        tlv_type, size = _TLV_HEADER.unpack_from(tlvs, offset)
        offset += _TLV_HEADER.size + size
        if offset > len(tlvs):
            raise ProxyProtocolError(
                BAD_PROXY_V2, f"PROXY v2 TLV type 0x{tlv_type:02x} declares {size} bytes, past the header's end"
            )
