"""The server X.224 Connection Confirm ([MS-RDPBCGR] 2.2.1.2) as a value.

Layout: TPKT (4) | X.224 CC fixed part (7) | optional RDP_NEG_RSP or
RDP_NEG_FAILURE (8). Used by the X.224 health probe and to read a backend's
answer. As for the request, the TPKT length frames the packet and the LI byte
is not used (FreeRDP's client does not check it strictly either); a CC that is
not 11 or 19 bytes, or carries another TPDU (xrdp answers a CR it dislikes
with an X.224 Data TPDU), is a ProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import MAX_CONNECTION_CONFIRM_BYTES, X224_CONNECTION_CONFIRM, X224_HEADER_END
from .errors import NOT_CONNECTION_CONFIRM
from .framing import check_x224_fixed, exact_packet_length
from .negotiation import parse_negotiation_response


@dataclass(frozen=True, slots=True)
class ConnectionConfirm:
    raw: bytes
    neg_type: int | None  # TYPE_RDP_NEG_RSP, TYPE_RDP_NEG_FAILURE, or None (no negotiation data)
    selected_protocol: int | None  # RDP_NEG_RSP only
    failure_code: int | None  # RDP_NEG_FAILURE only
    flags: int | None  # the flags byte of either structure


def parse_connection_confirm(data: bytes, max_size: int = MAX_CONNECTION_CONFIRM_BYTES) -> ConnectionConfirm:
    """Parse exactly one complete Connection Confirm packet; raises ProtocolError."""
    length = exact_packet_length(data, max_size)
    check_connection_confirm_fixed(data, length)
    return parse_framed_connection_confirm(data)


def check_connection_confirm_fixed(buf: bytes, length: int) -> None:
    """The X.224 CC fixed-part checks on whatever prefix of the packet ``buf`` holds."""
    check_x224_fixed(buf, length, X224_CONNECTION_CONFIRM, NOT_CONNECTION_CONFIRM, "Connection Confirm")


def parse_framed_connection_confirm(data: bytes) -> ConnectionConfirm:
    """Parse a CC whose TPKT header and X.224 fixed part were already checked (handshake path)."""
    negotiation = parse_negotiation_response(data, X224_HEADER_END)
    return ConnectionConfirm(
        raw=data,
        neg_type=negotiation.neg_type,
        selected_protocol=negotiation.selected_protocol,
        failure_code=negotiation.failure_code,
        flags=negotiation.flags,
    )
