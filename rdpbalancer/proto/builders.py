"""Build handshake packets: Connection Requests for probes, tests and benchmarks, and
Connection Confirms / negotiation failures the balancer sends itself ([MS-RDPBCGR] 2.2.1).

Builders refuse (ValueError) to produce what the parser would reject, so every
packet built here parses back to the same fields, and every LI is consistent.
"""

from __future__ import annotations

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
