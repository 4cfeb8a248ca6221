"""The client X.224 Connection Request ([MS-RDPBCGR] 2.2.1.1) as a value.

Layout: TPKT (4) | X.224 CR fixed part (7) | optional cookie or routing-token
line | optional RDP_NEG_REQ (8) | optional RDP_NEG_CORRELATION_INFO (36).

Decisions, and why:

* **TPKT length wins over the X.224 LI.** The LI is one byte; FreeRDP 2 sends
  cookies up to 255 chars, so past ~250 bytes its LI wraps (293-byte CR with
  LI 0x20). We frame by the TPKT length, parse such a CR, and report
  ``li_mismatch=True`` for the session layer to log and count. We do not
  reject it: the backend gets the bytes verbatim and makes its own call (xrdp
  refuses it, cleanly).
* **One text line at most**, the cookie *or* a routing token, and it must end
  in CRLF inside the packet. A line starts with a printable byte; a control
  byte there means binary RDP_NEG_REQ data follows instead.
* **Cookie** = exactly ``Cookie: mstshash=`` (case as in the spec) + value. The
  value is kept as raw bytes (UTF-8 or an ANSI code page, never decoded). An
  empty value is accepted and reported as ``cookie=None``: an empty string
  must never become a sticky-session key shared by every such client.
* **Routing token** = any other line (``Cookie: msts=...``, ``tsv://...``, or a
  cookie spelled differently), without its CRLF.
* **Control bytes (0x00-0x1F, 0x7F) inside the line are rejected**
  (``bad-cookie`` / ``bad-routing-token``). No real client sends them; a lone CR
  or LF or a NUL would make us and the server disagree on where the value ends
  (FreeRDP's server ignores a cookie holding a NUL), and the values end up in
  logs, metrics and the admin UI. Bytes >= 0x80 are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .constants import (
    MAX_CONNECTION_REQUEST_BYTES,
    TPKT_HEADER_BYTES,
    X224_CONNECTION_REQUEST,
    X224_HEADER_END,
)
from .errors import BAD_COOKIE, BAD_ROUTING_TOKEN, NOT_CONNECTION_REQUEST, ProtocolError
from .framing import check_x224_fixed, exact_packet_length
from .negotiation import parse_negotiation_request
from .tokens import msts_target, tsv_collection

COOKIE_PREFIX: Final = b"Cookie: mstshash="
CRLF: Final = b"\r\n"
_CONTROL_BYTES: Final = bytes(range(0x20)) + b"\x7f"
_FIRST_PRINTABLE: Final = 0x20
_DEL: Final = 0x7F
_CR: Final = 0x0D


def has_control_byte(value: bytes) -> bool:
    """True if ``value`` holds a C0 control byte or DEL (bytes >= 0x80 are fine)."""
    return len(value.translate(None, _CONTROL_BYTES)) != len(value)


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    raw: bytes  # the exact TPKT packet, forwarded verbatim to the chosen server
    cookie: bytes | None
    routing_token: bytes | None
    requested_protocols: int | None
    neg_flags: int | None
    correlation_id: bytes | None
    li_mismatch: bool

    @property
    def msts_target(self) -> tuple[str, int] | None:
        """(host, port) of a ``Cookie: msts=`` routing token; None if absent or invalid."""
        return msts_target(self.routing_token)

    @property
    def collection(self) -> str | None:
        """The collection of a ``tsv://MS Terminal Services Plugin.1.NAME`` token, else None."""
        return tsv_collection(self.routing_token)


def parse_connection_request(
    packet: bytes, max_size: int = MAX_CONNECTION_REQUEST_BYTES
) -> ConnectionRequest:
    """Parse one complete Connection Request; ``packet`` must be exactly one TPKT packet."""
    length = exact_packet_length(packet, max_size)
    check_connection_request_fixed(packet, length)
    return parse_framed_connection_request(packet)


def check_connection_request_fixed(buf: bytes, length: int) -> None:
    """The X.224 CR fixed-part checks on whatever prefix of the packet ``buf`` holds."""
    check_x224_fixed(buf, length, X224_CONNECTION_REQUEST, NOT_CONNECTION_REQUEST, "Connection Request")


def parse_framed_connection_request(packet: bytes) -> ConnectionRequest:
    """Parse a CR whose TPKT header and X.224 fixed part were already checked (handshake path)."""
    length = len(packet)
    cookie, routing_token, offset = _parse_text_line(packet, X224_HEADER_END)
    negotiation = parse_negotiation_request(packet, offset)
    return ConnectionRequest(
        raw=packet,
        cookie=cookie,
        routing_token=routing_token,
        requested_protocols=negotiation.requested_protocols,
        neg_flags=negotiation.flags,
        correlation_id=negotiation.correlation_id,
        li_mismatch=packet[TPKT_HEADER_BYTES] != length - TPKT_HEADER_BYTES - 1,
    )


def _parse_text_line(packet: bytes, start: int) -> tuple[bytes | None, bytes | None, int]:
    """Return (cookie, routing_token, offset after the line) for the variable part at ``start``."""
    if start == len(packet):
        return None, None, start
    first = packet[start]
    if first == _CR:
        raise ProtocolError(BAD_ROUTING_TOKEN, "variable part starts with CR: an empty routing-token line")
    if first < _FIRST_PRINTABLE or first == _DEL:
        return None, None, start  # binary: an RDP_NEG_REQ, or junk that its parser rejects
    end = packet.find(CRLF, start)
    line = packet[start:] if end < 0 else packet[start:end]
    is_cookie = line.startswith(COOKIE_PREFIX)
    kind, name = (BAD_COOKIE, "cookie") if is_cookie else (BAD_ROUTING_TOKEN, "routing token")
    if end < 0:
        raise ProtocolError(kind, f"{name} line is not terminated by CRLF within the packet")
    if has_control_byte(line):
        raise ProtocolError(kind, f"{name} contains a control byte (NUL, lone CR/LF, ...)")
    offset = end + len(CRLF)
    if is_cookie:
        return line[len(COOKIE_PREFIX) :] or None, None, offset
    return None, line, offset
