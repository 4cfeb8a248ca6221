"""The one exception type that leaves the RDP handshake parser.

Anything else escaping ``rdpbalancer.proto`` while parsing bytes is a bug (a
hypothesis test feeds arbitrary input to check this). Calling the API wrongly
(feeding data after EOF, bad builder arguments) raises ``RuntimeError`` or
``ValueError``: those are programming errors, not something a peer can cause.

``kind`` is a short, stable label meant for metrics and logs; ``str(err)`` is a
human message saying what was wrong. The kinds are the constants below.
"""

from __future__ import annotations

from typing import Final

# Input ended before anything / before the packet was complete.
EOF: Final = "eof"
TRUNCATED: Final = "truncated"
# TPKT header ([T.123] section 8): version 3, reserved 0, length >= 11.
NOT_TPKT: Final = "not-tpkt"
BAD_TPKT_RESERVED: Final = "bad-tpkt-reserved"
BAD_TPKT_LENGTH: Final = "bad-tpkt-length"
TOO_LARGE: Final = "too-large"
# X.224 fixed part ([X.224] 13.3 / 13.4).
NOT_CONNECTION_REQUEST: Final = "not-connection-request"
NOT_CONNECTION_CONFIRM: Final = "not-connection-confirm"
BAD_CLASS: Final = "bad-class"
# Variable part of the Connection Request ([MS-RDPBCGR] 2.2.1.1).
BAD_COOKIE: Final = "bad-cookie"
BAD_ROUTING_TOKEN: Final = "bad-routing-token"
BAD_NEG_REQ: Final = "bad-neg-req"
BAD_CORRELATION_INFO: Final = "bad-correlation-info"
# Variable part of the Connection Confirm ([MS-RDPBCGR] 2.2.1.2).
BAD_NEG_RSP: Final = "bad-neg-rsp"
# parse_connection_confirm() was given more than one packet.
EXTRA_DATA: Final = "extra-data"

ALL_KINDS: Final = frozenset(
    {
        EOF,
        TRUNCATED,
        NOT_TPKT,
        BAD_TPKT_RESERVED,
        BAD_TPKT_LENGTH,
        TOO_LARGE,
        NOT_CONNECTION_REQUEST,
        NOT_CONNECTION_CONFIRM,
        BAD_CLASS,
        BAD_COOKIE,
        BAD_ROUTING_TOKEN,
        BAD_NEG_REQ,
        BAD_CORRELATION_INFO,
        BAD_NEG_RSP,
        EXTRA_DATA,
    }
)


class ProtocolError(Exception):
    """The peer sent something that is not a valid RDP handshake packet."""

    kind: str

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __repr__(self) -> str:
        return f"ProtocolError(kind={self.kind!r}, message={str(self)!r})"


# PROXY protocol header (HAProxy's proxy-protocol.txt, sections 2.1 and 2.2), read by
# ``proxy.py`` before the Connection Request when a listener sits behind a proxy.
# Kept out of ALL_KINDS, which lists what the X.224 handshake readers can raise.
NOT_PROXY: Final = "not-proxy"
BAD_PROXY_V1: Final = "bad-proxy-v1"
BAD_PROXY_V2: Final = "bad-proxy-v2"
PROXY_TOO_LARGE: Final = "proxy-too-large"

PROXY_KINDS: Final = frozenset({NOT_PROXY, BAD_PROXY_V1, BAD_PROXY_V2, PROXY_TOO_LARGE})


class ProxyProtocolError(ProtocolError):
    """The peer's PROXY protocol header is invalid; ``kind`` is one of PROXY_KINDS.

    A subclass, so that code catching ProtocolError keeps working, while the session
    layer can tell a misconfigured proxy in front of us from a bad RDP client.
    """
