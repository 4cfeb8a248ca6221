"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd set it."""

from __future__ import annotations

import os
import socket
import time


def notify(message: str) -> bool:
    """Send e.g. "READY=1" to the service manager; False when not run under Type=notify."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path  # '@' = abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True



def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC (systemd >= 253)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
