"""Wire constants of the RDP connection initiation phase ([MS-RDPBCGR] 2.2.1.1 - 2.2.1.2)."""

from __future__ import annotations

from typing import Final

# Upper bound on one client X.224 Connection Request, TPKT header included.
# A spec-conformant CR cannot exceed 259 bytes (the X.224 LI is one byte, at most
# 254, plus 5). The largest real one we know is FreeRDP's: 4 TPKT + 7 X.224 +
# 17 "Cookie: mstshash=" + 255-char cookie (CookieMaxLength) + 2 CRLF + 8
# RDP_NEG_REQ + 36 RDP_NEG_CORRELATION_INFO = 329 bytes (its LI wraps, see
# request.py). 1024 leaves room for longer LoadBalanceInfo routing tokens while
# bounding what an unauthenticated peer makes us buffer before routing.
MAX_CONNECTION_REQUEST_BYTES: Final = 1024

# A Connection Confirm is 11 bytes, or 19 with RDP_NEG_RSP / RDP_NEG_FAILURE;
# 64 tolerates nothing unexpected but costs nothing.
MAX_CONNECTION_CONFIRM_BYTES: Final = 64

# TPKT ([T.123] section 8) and X.224 class 0 TPDU fixed parts ([X.224] 13.3, 13.4).
TPKT_VERSION: Final = 3
TPKT_HEADER_BYTES: Final = 4
X224_FIXED_BYTES: Final = 7  # LI, code, DST-REF(2), SRC-REF(2), class option
X224_HEADER_END: Final = TPKT_HEADER_BYTES + X224_FIXED_BYTES  # 11: start of the variable part
X224_CONNECTION_REQUEST: Final = 0xE0  # CR code 0xE, CDT 0 (class 0 has no credit)
X224_CONNECTION_CONFIRM: Final = 0xD0  # CC code 0xD, CDT 0
X224_DATA: Final = 0xF0

# requestedProtocols / selectedProtocol ([MS-RDPBCGR] 2.2.1.1.1, 2.2.1.2.1).
PROTOCOL_RDP: Final = 0x00000000
PROTOCOL_SSL: Final = 0x00000001
PROTOCOL_HYBRID: Final = 0x00000002
PROTOCOL_RDSTLS: Final = 0x00000004
PROTOCOL_HYBRID_EX: Final = 0x00000008
PROTOCOL_RDSAAD: Final = 0x00000010

# Negotiation structure types.
TYPE_RDP_NEG_REQ: Final = 0x01
TYPE_RDP_NEG_RSP: Final = 0x02
TYPE_RDP_NEG_FAILURE: Final = 0x03
TYPE_RDP_CORRELATION_INFO: Final = 0x06
NEG_STRUCT_BYTES: Final = 8  # RDP_NEG_REQ, RDP_NEG_RSP and RDP_NEG_FAILURE are all 8 bytes
CORRELATION_INFO_BYTES: Final = 36
CORRELATION_ID_BYTES: Final = 16

# RDP_NEG_REQ flags ([MS-RDPBCGR] 2.2.1.1.1).
RESTRICTED_ADMIN_MODE_REQUIRED: Final = 0x01
REDIRECTED_AUTHENTICATION_MODE_REQUIRED: Final = 0x02
CORRELATION_INFO_PRESENT: Final = 0x08

# RDP_NEG_RSP flags ([MS-RDPBCGR] 2.2.1.2.1).
EXTENDED_CLIENT_DATA_SUPPORTED: Final = 0x01
DYNVC_GFX_PROTOCOL_SUPPORTED: Final = 0x02
RDP_NEGRSP_RESERVED: Final = 0x04
RESTRICTED_ADMIN_MODE_SUPPORTED: Final = 0x08
REDIRECTED_AUTHENTICATION_MODE_SUPPORTED: Final = 0x10

# RDP_NEG_FAILURE failureCode ([MS-RDPBCGR] 2.2.1.2.2).
SSL_REQUIRED_BY_SERVER: Final = 0x00000001
SSL_NOT_ALLOWED_BY_SERVER: Final = 0x00000002
SSL_CERT_NOT_ON_SERVER: Final = 0x00000003
INCONSISTENT_FLAGS: Final = 0x00000004
HYBRID_REQUIRED_BY_SERVER: Final = 0x00000005
SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER: Final = 0x00000006
