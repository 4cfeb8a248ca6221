"""Build handshake packets: Connection Requests for probes, tests and benchmarks, and
Connection Confirms / negotiation failures the balancer sends itself ([MS-RDPBCGR] 2.2.1).

Builders refuse (ValueError) to produce what the parser would reject, so every
packet built here parses back to the same fields, and every LI is consistent.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from .constants import (
    CORRELATION_INFO_PRESENT,
    PROTOCOL_HYBRID,
    PROTOCOL_SSL,
    TPKT_HEADER_BYTES,
    TPKT_VERSION,
    TYPE_RDP_NEG_FAILURE,
    TYPE_RDP_NEG_REQ,
    TYPE_RDP_NEG_RSP,
    X224_CONNECTION_CONFIRM,
    X224_CONNECTION_REQUEST,
)
from .negotiation import pack_correlation_info, pack_negotiation
from .proxy import MAX_PROXY_V2_BYTES, V2_SIGNATURE
from .request import COOKIE_PREFIX, CRLF, has_control_byte

_TPKT_HEADER: Final = struct.Struct(">BBH")
# LI, TPDU code, DST-REF, SRC-REF (both big-endian), class option: class 0, no options.
_X224_FIXED: Final = struct.Struct(">BBHHB")
_MAX_LI: Final = 254  # [X.224] 13.2.1: 255 is reserved, so one byte carries at most 254


def _tpdu(code: int, variable: bytes) -> bytes:
    """TPKT header + X.224 class 0 fixed part with ``code`` + ``variable``."""
    li = _X224_FIXED.size - 1 + len(variable)
    if li > _MAX_LI:
        raise ValueError(f"X.224 header would be {li} bytes, the one-byte LI holds at most {_MAX_LI}")
    length = TPKT_HEADER_BYTES + 1 + li
    fixed = _X224_FIXED.pack(li, code, 0, 0, 0)
    return _TPKT_HEADER.pack(TPKT_VERSION, 0, length) + fixed + variable


def _check_line_value(value: bytes, name: str) -> None:
    if has_control_byte(value):
        raise ValueError(f"{name} must not contain control bytes (CR, LF, NUL, ...)")


def _text_line(cookie: bytes | None, routing_token: bytes | None) -> bytes:
    if cookie is not None and routing_token is not None:
        raise ValueError("cookie and routing_token are mutually exclusive ([MS-RDPBCGR] 2.2.1.1)")
    if cookie is not None:
        _check_line_value(cookie, "cookie")
        return COOKIE_PREFIX + cookie + CRLF
    if routing_token is not None:
        _check_line_value(routing_token, "routing token")
        if not routing_token or routing_token.startswith(COOKIE_PREFIX):
            raise ValueError("routing token must be non-empty and not a mstshash cookie")
        return routing_token + CRLF
    return b""


def build_connection_request(
    cookie: bytes | None = None,
    routing_token: bytes | None = None,
    requested_protocols: int | None = PROTOCOL_SSL | PROTOCOL_HYBRID,
    *,
    neg_flags: int = 0,
    correlation_id: bytes | None = None,
) -> bytes:
    """A client X.224 Connection Request; RDP_NEG_REQ unless ``requested_protocols`` is None.

    ``correlation_id`` (16 bytes) adds RDP_NEG_CORRELATION_INFO and sets the
    CORRELATION_INFO_PRESENT flag.
    """
    variable = _text_line(cookie, routing_token)
    if correlation_id is not None:
        neg_flags |= CORRELATION_INFO_PRESENT
    elif neg_flags & CORRELATION_INFO_PRESENT:
        raise ValueError("CORRELATION_INFO_PRESENT flag given without a correlation_id")
    if requested_protocols is not None:
        variable += pack_negotiation(TYPE_RDP_NEG_REQ, neg_flags, requested_protocols)
        if correlation_id is not None:
            variable += pack_correlation_info(correlation_id)
    elif neg_flags or correlation_id is not None:
        raise ValueError("neg_flags / correlation_id need an RDP_NEG_REQ (requested_protocols)")
    return _tpdu(X224_CONNECTION_REQUEST, variable)


def build_connection_confirm(selected_protocol: int | None = None, flags: int = 0) -> bytes:
    """A server X.224 Connection Confirm, with RDP_NEG_RSP if ``selected_protocol`` is given.

    Without a selected protocol (the client sent no RDP_NEG_REQ) ``flags`` is ignored.
    """
    if selected_protocol is None:
        return _tpdu(X224_CONNECTION_CONFIRM, b"")
    return _tpdu(X224_CONNECTION_CONFIRM, pack_negotiation(TYPE_RDP_NEG_RSP, flags, selected_protocol))


def build_neg_failure(code: int) -> bytes:
    """A Connection Confirm carrying RDP_NEG_FAILURE with ``code`` (e.g. HYBRID_REQUIRED_BY_SERVER)."""
    return _tpdu(X224_CONNECTION_CONFIRM, pack_negotiation(TYPE_RDP_NEG_FAILURE, 0, code))


# --- PROXY protocol headers (HAProxy's doc/proxy-protocol.txt), for tests, benchmarks and
# anything that sends through a listener configured to expect them ---

_PROXY_V2_FIXED: Final = struct.Struct(">12sBBH")  # signature, version/command, family/transport, length
_PROXY_V2_TCP: Final = {4: (0x11, ">4s4sHH"), 6: (0x21, ">16s16sHH")}  # IP version -> (family byte, block)


def _proxy_endpoints(
    source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if source is None or destination is None:
        raise ValueError("source and destination are both given, or both None")
    if "%" in source[0] + destination[0]:
        raise ValueError("IPv6 scope ids have no PROXY protocol form")
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError(f"source {src} and destination {dst} are not the same IP version")
    for port in (source[1], destination[1]):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} is not in 0..65535")
    return src, source[1], dst, destination[1]


def build_proxy_v1(source: tuple[str, int] | None = None, destination: tuple[str, int] | None = None) -> bytes:
    """A PROXY v1 line: ``PROXY TCP4|TCP6 ...`` for two endpoints, ``PROXY UNKNOWN`` for none."""
    if source is None and destination is None:
        return b"PROXY UNKNOWN\r\n"
    src, source_port, dst, destination_port = _proxy_endpoints(source, destination)
    return f"PROXY TCP{src.version} {src} {dst} {source_port} {destination_port}\r\n".encode("ascii")


def build_proxy_v2(
    source: tuple[str, int] | None = None,
    destination: tuple[str, int] | None = None,
    *,
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """A PROXY v2 header: the PROXY command over TCP for two endpoints, LOCAL for none; then ``tlvs``.

    ``tlvs`` are (type, value) pairs, sent as given; the whole header must fit MAX_PROXY_V2_BYTES.
    """
    if source is None and destination is None:
        version_command, family, block = 0x20, 0x00, b""
    else:
        src, source_port, dst, destination_port = _proxy_endpoints(source, destination)
        family, layout = _PROXY_V2_TCP[src.version]
        version_command = 0x21
        block = struct.pack(layout, src.packed, dst.packed, source_port, destination_port)
    for tlv_type, value in tlvs:
        if not 0 <= tlv_type <= 0xFF or len(value) > 0xFFFF:
            raise ValueError(f"TLV type {tlv_type} or its {len(value)}-byte value does not fit")
        block += struct.pack(">BH", tlv_type, len(value)) + value
    if _PROXY_V2_FIXED.size + len(block) > MAX_PROXY_V2_BYTES:
        raise ValueError(
            f"PROXY v2 header would be {_PROXY_V2_FIXED.size + len(block)} bytes, "
            f"above the parser's {MAX_PROXY_V2_BYTES}-byte cap"
        )
    return _PROXY_V2_FIXED.pack(V2_SIGNATURE, version_command, family, len(block)) + block
