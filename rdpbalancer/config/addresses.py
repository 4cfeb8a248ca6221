"""``host:port`` parsing for listen and backend addresses.

Pure standard library, like :mod:`rdpbalancer.config.durations`. Hosts are normalised so that
two spellings of one address compare equal: IP addresses in their canonical form (IPv6
compressed, without brackets), host names lower-cased (DNS names are case-insensitive).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

MIN_PORT = 1  # port 0 means "any free port" to bind() and is meaningless for a server
MAX_PORT = 65535  # TCP ports are 16-bit

# RFC 1123 labels; "_" is accepted because Windows hosts in AD domains sometimes carry one.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_HOST_NAME_LENGTH = 253  # RFC 1035 2.3.4, without the trailing dot


@dataclass(frozen=True, slots=True)
class HostPort:
    """A normalised host and a TCP port; ``str()`` gives back ``host:port`` ([v6]:port)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenAddress(HostPort):
    """An address the balancer accepts RDP clients on (``[balancer] listen``). `proxy_protocol`:
    every connection starts with a PROXY v1/v2 header from a trusted proxy (not part of the
    address's identity: routes and duplicates compare host and port)."""

    proxy_protocol: bool = field(default=False, compare=False)


class BackendAddress(HostPort):
    """The address of one RDP server (``servers = [{ address = ... }]``)."""

    __slots__ = ()


def parse_host_port(text: str, default_port: int | None = None, *, allow_any_port: bool = False) -> tuple[str, int]:
    """Parse ``"0.0.0.0:3389"``, ``"[::]:3389"`` or ``"host.example:3389"``.

    The port may be left out when ``default_port`` is given. IPv6 addresses must be
    bracketed. Raises ValueError naming the problem.
    """
    host_text, port_text = _split_host_port(text.strip())
    host = _parse_host(host_text, text)
    if port_text is None:
        if default_port is None:
            raise ValueError(f"invalid address {text!r}: missing port (expected host:port)")
        return host, default_port
    return host, _parse_port(port_text, text, 0 if allow_any_port else MIN_PORT)


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {text!r}: expected [IPv6]:port")
        if not _is_ipv6(host):
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv6 address")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        raise ValueError(f"invalid address {text!r}: put IPv6 addresses in brackets, e.g. [::1]:3389")
    host, colon, port = text.partition(":")
    return host, port if colon else None


def _parse_host(host: str, text: str) -> str:
    if not host:
        raise ValueError(f"invalid address {text!r}: missing host (use 0.0.0.0 or [::] for all interfaces)")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower()
    if len(name) > _MAX_HOST_NAME_LENGTH or not _HOST_NAME.fullmatch(name) or _looks_numeric(name):
        raise ValueError(f"invalid address {text!r}: {host!r} is neither an IP address nor a host name")
    return name


def _looks_numeric(name: str) -> bool:
    """A name whose last label is all digits is a mistyped IPv4 address (e.g. 10.0.0.300)."""
    return name.rsplit(".", 1)[-1].isdigit()


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _parse_port(port: str, text: str, low: int = MIN_PORT) -> int:
    # isascii() too: str.isdigit() accepts other scripts' digits, which int() would then read.
    if not (port.isascii() and port.isdigit()) or len(port) > len(str(MAX_PORT)):
        raise ValueError(f"invalid address {text!r}: port {port!r} is not a number from 1 to 65535")
    number = int(port)
    if not low <= number <= MAX_PORT:
        raise ValueError(f"invalid address {text!r}: port {number} is out of range {low}..65535")
    return number
