"""Whether a configuration reaches beyond this machine. The Debian package's default file binds
and contacts only loopback until the admin names servers; `run` says so in its log, so that an
admin who finds the service refusing every client sees why at once."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdpbalancer.config.schema import Config

LOOPBACK_NAMES = frozenset({"localhost"})  # /etc/hosts maps it to 127.0.0.1 and ::1


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"; any other name may resolve anywhere."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def beyond_loopback(config: Config) -> tuple[str, ...]:
    """What the configuration binds or contacts outside loopback, one phrase each; () when it
    touches loopback only."""
    found = [f"listener {a}" for a in config.balancer.listen if not is_loopback(a.host)]
    if config.admin.enabled and not is_loopback(config.admin.listen.host):
        found.append(f"admin API {config.admin.listen}")
    found += [f"server {s.name} {s.address}" for p in config.pools for s in p.servers
              if not is_loopback(s.address.host)]
    if config.sticky.store == "redis":
        found.append("[sticky.redis]")
    if config.directory.ldap is not None:
        found.append("[directory.ldap]")
    sources = [config.sessions.source, *(p.sessions.source for p in config.pools),
               *(s.sessions.source for p in config.pools for s in p.servers)]
    if "command" in sources:
        found.append('[sessions] source = "command"')  # a program of the admin's: it may go anywhere
    return tuple(found)


def loopback_only_notice(config: Config) -> str | None:
    """The log line of a configuration that touches loopback only, or None."""
    if beyond_loopback(config):
        return None
    return (f"{config.source_path}: only loopback: every listener and server is on this machine, nothing "
            "is sent beyond it; name your servers (and listen addresses) in this file to serve users")
