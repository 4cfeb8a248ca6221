"""HAProxy values (times, sizes, addresses) converted to rdpbalancer's spelling.

Each function raises ValueError with a readable message; the caller adds the line number.
"""

from __future__ import annotations

import math
import re

from rdpbalancer.config.addresses import BackendAddress, ListenAddress, parse_host_port
from rdpbalancer.config.durations import format_duration

DEFAULT_RDP_PORT = 3389  # rdpbalancer's default server port, as in the config schema

# configuration.txt 2.5: a time is a number with an optional unit; no unit means milliseconds.
_TIME = re.compile(r"([0-9]+)(us|ms|s|m|h|d)?")
_TIME_UNIT_MS = {None: 1.0, "us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0,
                 "d": 86_400_000.0}
# stick-table "size": the suffixes k, m, g are factors 2^10, 2^20, 2^30 (configuration.txt, stick-table).
_SIZE = re.compile(r"([0-9]+)([kmgKMG]?)")
_SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# Address prefixes that still mean a TCP socket; unix@, abns@, fd@, sockpair@, udp@ and quic4@ do not.
_TCP_PREFIXES = {"ipv4": "0.0.0.0", "tcp4": "0.0.0.0", "ipv6": "::", "tcp6": "::", "tcp": "0.0.0.0"}


def parse_time_ms(text: str) -> float:
    """``"4s"`` -> 4000.0, ``"500"`` -> 500.0 (HAProxy's default unit is the millisecond)."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid HAProxy time {text!r} (a number with an optional unit: us, ms, s, m, h, d)")
    return int(match[1]) * _TIME_UNIT_MS[match[2]]


def duration(ms: float) -> str:
    """rdpbalancer's duration string for ``ms`` > 0: "4s", "1500ms", "1h30m" (rounded up to 1 ms)."""
    whole_ms = max(1, math.ceil(ms))
    return f"{whole_ms}ms" if whole_ms % 1000 else format_duration(whole_ms / 1000)


def parse_size(text: str) -> int:
    """``"10k"`` -> 10240."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid HAProxy size {text!r} (a number with an optional k, m or g)")
    return int(match[1]) * _SIZE_FACTORS[match[2].lower()]


def parse_int(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"invalid {what} {text!r}: expected a whole number")
    return int(text)


def listen_addresses(spec: str) -> list[str]:
    """A ``bind`` address list (``"*:3389"``, ``":::3389"``, ``"10.0.0.1:3389,10.0.0.2:3389"``)."""
    return [_listen_address(part) for part in spec.split(",")]


def _listen_address(text: str) -> str:
    any_host, rest = _strip_prefix(text)
    host, port = _split_port(rest, text)
    if port is None:
        raise ValueError(f"bind address {text!r} has no port")
    if host in ("", "*"):
        host = any_host
    return str(ListenAddress(*parse_host_port(f"{_bracket(host)}:{port}", None)))


def server_address(text: str) -> tuple[str, bool]:
    """A ``server`` address as "host:port"; the flag says the port was missing (3389 taken)."""
    _, rest = _strip_prefix(text)
    host, port = _split_port(rest, text)
    if not host:
        raise ValueError(f"server address {text!r} has no host")
    if port is not None and not port.isdigit():
        raise ValueError(f"server port {port!r} in {text!r}: port offsets and ranges have no equivalent")
    address = BackendAddress(*parse_host_port(f"{_bracket(host)}:{port or DEFAULT_RDP_PORT}", None))
    return str(address), port is None


def _strip_prefix(text: str) -> tuple[str, str]:
    """("0.0.0.0" or "::", the address without its "ipv4@"-style prefix)."""
    prefix, at, rest = text.partition("@")
    if not at:
        return "0.0.0.0", text
    if prefix not in _TCP_PREFIXES:
        raise ValueError(f"address {text!r}: {prefix}@ sockets have no rdpbalancer equivalent (TCP only)")
    return _TCP_PREFIXES[prefix], rest


def _split_port(text: str, original: str) -> tuple[str, str | None]:
    """HAProxy takes the port after the last colon, also for IPv6 (":::3389" is [::]:3389)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {original!r}")
        return host, rest[1:] or None
    if text.startswith("/") or "$" in text:
        raise ValueError(f"address {original!r}: UNIX sockets and environment variables have no equivalent here")
    host, colon, port = text.rpartition(":")
    if not colon:
        return text, None
    if "-" in port:
        raise ValueError(f"address {original!r}: port ranges have no rdpbalancer equivalent")
    return host, port or None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
