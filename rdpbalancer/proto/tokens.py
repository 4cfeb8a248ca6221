"""Routing-token formats of the Connection Request ([MS-RDPBCGR] 2.2.1.1, [MSFT-SDLBTS]).

* ``Cookie: msts=IP.PORT.RESERVED``: the target server a Connection Broker
  redirected the client to. IP and PORT are the IPv4 address and TCP port in
  network byte order, read as little-endian integers and written in decimal:
  ``3640205228.15629.0000`` is 172.31.249.216:3389. RESERVED is ``0000``.
* ``tsv://MS Terminal Services Plugin.1.COLLECTION``: the RD collection named in
  the client's ``loadbalanceinfo``.

Both come from the client unauthenticated. Decoding one says nothing about
whether it may be honoured: routing policy must only send a client to a target
that is one of its own backends, or the balancer becomes an open relay.
"""

from __future__ import annotations

import ipaddress
from typing import Final

MSTS_PREFIX: Final = b"Cookie: msts="
TSV_COLLECTION_PREFIX: Final = b"tsv://ms terminal services plugin.1."  # compared case-insensitively
MSTS_RESERVED: Final = "0000"

# A uint32 has at most 10 decimal digits and a uint16 5; bounding the digit count
# keeps int() away from huge inputs. RESERVED is "0000" in practice; allow a few.
_MAX_IP_DIGITS: Final = 10
_MAX_PORT_DIGITS: Final = 5
_MAX_RESERVED_DIGITS: Final = 8


def _decimal(field: str, name: str, max_digits: int) -> int:
    # str.isdigit() and int() accept non-ASCII digits, signs, "_" and spaces:
    # only plain ASCII digits are a valid token.
    if not field or len(field) > max_digits or not (field.isascii() and field.isdigit()):
        raise ValueError(f"msts token {name} {field!r} is not 1-{max_digits} ASCII digits")
    return int(field)


def _as_text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        if not value.isascii():
            raise ValueError("msts token is not ASCII")
        value = value.decode("ascii")
    return value.removeprefix(MSTS_PREFIX.decode("ascii"))


def decode_msts_token(value: bytes | str) -> tuple[str, int]:
    """Decode ``[Cookie: msts=]IP.PORT.RESERVED`` to ``(dotted IPv4, port)``.

    Raises ValueError on anything else (wrong shape, out-of-range numbers, port 0).
    """
    parts = _as_text(value).split(".")
    if len(parts) != 3:
        raise ValueError(f"msts token has {len(parts)} dot-separated fields, expected 3")
    address = _decimal(parts[0], "address", _MAX_IP_DIGITS)
    port = _decimal(parts[1], "port", _MAX_PORT_DIGITS)
    _decimal(parts[2], "reserved field", _MAX_RESERVED_DIGITS)
    if address > 0xFFFFFFFF or port > 0xFFFF:
        raise ValueError("msts token address or port out of range")
    host = str(ipaddress.IPv4Address(address.to_bytes(4, "little")))
    host_port = int.from_bytes(port.to_bytes(2, "little"), "big")
    if host_port == 0:
        raise ValueError("msts token port is 0")
    return host, host_port


def encode_msts_token(host: str, port: int) -> str:
    """Inverse of :func:`decode_msts_token`; returns the value without ``Cookie: msts=``."""
    packed = ipaddress.IPv4Address(host).packed  # raises ValueError for non-IPv4 hosts
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"port {port} is not in 1..65535")
    address = int.from_bytes(packed, "little")
    wire_port = int.from_bytes(port.to_bytes(2, "big"), "little")
    return f"{address}.{wire_port}.{MSTS_RESERVED}"


def msts_target(routing_token: bytes | None) -> tuple[str, int] | None:
    """The target of a ``Cookie: msts=`` token, or None (also for an invalid one)."""
    if routing_token is None or not routing_token.startswith(MSTS_PREFIX):
        return None
    try:
        return decode_msts_token(routing_token)
    except ValueError:
        return None


def tsv_collection(routing_token: bytes | None) -> str | None:
    """The collection name of a ``tsv://MS Terminal Services Plugin.1.NAME`` token, or None.

    The prefix is matched case-insensitively (it is typed by hand into .rdp
    files); a name that is empty or not UTF-8 gives None.
    """
    prefix_len = len(TSV_COLLECTION_PREFIX)
    if routing_token is None or routing_token[:prefix_len].lower() != TSV_COLLECTION_PREFIX:
        return None
    try:
        name = routing_token[prefix_len:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name or None
