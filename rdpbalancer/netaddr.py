"""Addresses and socket errors as people read them (shared by config, health, relay and admin)."""

from __future__ import annotations

import os


def format_addr(host: str, port: int) -> str:
    """"10.0.0.1:3389", "[2001:db8::1]:3389": the form the configuration and the logs use."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_os_error(exc: OSError) -> str:
    """'Connection refused' rather than uvloop's "Connect call failed ('10.0.0.1', 3389)"."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__
