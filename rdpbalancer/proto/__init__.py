"""Sans-IO RDP connection initiation: TPKT, X.224 CR/CC, RDP_NEG_*, routing tokens.

Standard library only: no sockets, no asyncio, no clock. Bytes in, events out,
leftover bytes handed on. ``ProtocolError`` is the only exception parsing can
raise. Modules: ``framing`` (TPKT + X.224 fixed part), ``request`` / ``confirm``
(the two packets as values), ``negotiation`` (RDP_NEG_*), ``tokens`` (msts and
tsv routing tokens), ``builders``, ``handshake`` (the sans-IO readers).
"""

from .builders import build_connection_confirm, build_connection_request, build_neg_failure
from .confirm import ConnectionConfirm, parse_connection_confirm
from .constants import (
    CORRELATION_INFO_PRESENT,
    DYNVC_GFX_PROTOCOL_SUPPORTED,
    EXTENDED_CLIENT_DATA_SUPPORTED,
    HYBRID_REQUIRED_BY_SERVER,
    INCONSISTENT_FLAGS,
    MAX_CONNECTION_CONFIRM_BYTES,
    MAX_CONNECTION_REQUEST_BYTES,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_RDSAAD,
    PROTOCOL_RDSTLS,
    PROTOCOL_SSL,
    REDIRECTED_AUTHENTICATION_MODE_REQUIRED,
    RESTRICTED_ADMIN_MODE_REQUIRED,
    SSL_CERT_NOT_ON_SERVER,
    SSL_NOT_ALLOWED_BY_SERVER,
    SSL_REQUIRED_BY_SERVER,
    SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER,
    TYPE_RDP_NEG_FAILURE,
    TYPE_RDP_NEG_RSP,
)
from .errors import ProtocolError
from .handshake import (
    NEED_DATA,
    ClientHandshake,
    ConnectionConfirmReceived,
    ConnectionRequestReceived,
    NeedData,
    ServerHandshake,
)
from .request import ConnectionRequest, parse_connection_request
from .tokens import decode_msts_token, encode_msts_token

__all__ = [
    "CORRELATION_INFO_PRESENT",
    "DYNVC_GFX_PROTOCOL_SUPPORTED",
    "EXTENDED_CLIENT_DATA_SUPPORTED",
    "HYBRID_REQUIRED_BY_SERVER",
    "INCONSISTENT_FLAGS",
    "MAX_CONNECTION_CONFIRM_BYTES",
    "MAX_CONNECTION_REQUEST_BYTES",
    "NEED_DATA",
    "PROTOCOL_HYBRID",
    "PROTOCOL_HYBRID_EX",
    "PROTOCOL_RDP",
    "PROTOCOL_RDSAAD",
    "PROTOCOL_RDSTLS",
    "PROTOCOL_SSL",
    "REDIRECTED_AUTHENTICATION_MODE_REQUIRED",
    "RESTRICTED_ADMIN_MODE_REQUIRED",
    "SSL_CERT_NOT_ON_SERVER",
    "SSL_NOT_ALLOWED_BY_SERVER",
    "SSL_REQUIRED_BY_SERVER",
    "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
    "TYPE_RDP_NEG_FAILURE",
    "TYPE_RDP_NEG_RSP",
    "ClientHandshake",
    "ConnectionConfirm",
    "ConnectionConfirmReceived",
    "ConnectionRequest",
    "ConnectionRequestReceived",
    "NeedData",
    "ProtocolError",
    "ServerHandshake",
    "build_connection_confirm",
    "build_connection_request",
    "build_neg_failure",
    "decode_msts_token",
    "encode_msts_token",
    "parse_connection_confirm",
    "parse_connection_request",
]
