"""Transparent mode: a server's connections come from the client's own address.

RDP hosts cannot read a PROXY header, so the only way for a host to log (and filter on) the
address of the user's machine is for the balancer to open the connection *from* that address:
`IP_TRANSPARENT` (`IPV6_TRANSPARENT`) on the socket, then a bind to the client's address, as
HAProxy's `source 0.0.0.0 usesrc clientip` does. The kernel allows it with CAP_NET_ADMIN (or
CAP_NET_RAW); the replies must come back through this machine and be delivered to the socket,
which is the admin's routing (contrib/transparent/rdpbalancer-transparent sets it up):

- the hosts' route to the clients goes through the balancer (their gateway, or policy routing);
- packets that belong to a transparent socket are marked (nftables `socket transparent 1`)
  and a rule sends marked packets to a routing table whose only route is `local` (delivered
  here, not forwarded).

This module is the socket part (`source_for`, `bind_transparent`), the start-up check of the
capability (`require`) and what `check-config` can see of the routing (`routing_findings`)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
from collections.abc import Iterable

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75  # linux/in6.h; Python does not name it
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# What contrib/transparent/rdpbalancer-transparent sets up unless told otherwise
DEFAULT_MARK = 0x1
DEFAULT_TABLE = 100
SCRIPT = "contrib/transparent/rdpbalancer-transparent"
HOW_TO_GRANT = ("grant it (README, Transparent mode): systemd AmbientCapabilities= and CapabilityBoundingSet= "
                "with CAP_NET_ADMIN; Docker: an image built with --build-arg "
                "CAPS=cap_net_bind_service,cap_net_admin, run with --cap-add NET_ADMIN")


class TransparentError(Exception):
    """Transparent mode cannot work in this process (raised at start and on reload, never per connection)."""


def source_for(client_host: str, family: int) -> str | None:
    """The address a connection to a server of `family` is opened from, for a client at
    `client_host`; None when it cannot be the client's (an IPv6 client and an IPv4 server, or
    the reverse: the server then sees the balancer's own address, and the log says so). An
    IPv4 client on a dual-stack listener (::ffff:a.b.c.d) is its IPv4 address.

    Per connection, twice: `inet_pton` checks the literal (the kernel's peer name, or a PROXY
    header's address, validated when parsed) in well under a microsecond; `ipaddress` took 4."""
    host = client_host
    if ":" in host:
        if host[:7].lower() == "::ffff:" and "." in host:
            host = host[7:]  # an IPv4 client on a dual-stack listener
        else:
            if family != socket.AF_INET6:
                return None
            try:
                socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
            except OSError:
                return None
            return host
    if family != socket.AF_INET:
        return None
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None  # "unknown": no peer address (a PROXY LOCAL header names none)
    return host


def bind_transparent(sock: socket.socket, address: str) -> None:
    """Open `sock`'s connection from `address`, which need not be this machine's. The port is
    the kernel's choice at connect (IP_BIND_ADDRESS_NO_PORT: the 4-tuple decides, so two
    clients' connections to one server never compete for a port). Raises OSError (EPERM: no
    capability)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((address, 0))


def capability_problem() -> str | None:
    """Why this process cannot open transparent sockets, or None when it can (tried on a real
    socket of each family: the kernel's answer, not a reading of capability bits)."""
    for family, level, option in ((socket.AF_INET, socket.IPPROTO_IP, IP_TRANSPARENT),
                                  (socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_TRANSPARENT)):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 in this kernel: nothing to connect over it either
        with sock:
            try:
                sock.setsockopt(level, option, 1)
            except OSError as exc:
                name = "IPV6_TRANSPARENT" if family == socket.AF_INET6 else "IP_TRANSPARENT"
                return (f"this process may not open sockets from a client's address ({name}: "
                        f"{exc.strerror}): transparent mode needs the CAP_NET_ADMIN capability; {HOW_TO_GRANT}")
    return None


def require(servers: Iterable[str]) -> None:
    """At start and on each reload: transparent servers need the capability, or nothing starts
    (and a reload is refused). A clear error once, not a failed connect per user."""
    names = sorted(servers)
    if not names:
        return
    problem = capability_problem()
    if problem is not None:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise TransparentError(f"transparent = true (servers {shown}): {problem}")


# -- what check-config can see of the routing ------------------------------------------------------


def routing_findings(mark: int = DEFAULT_MARK, table: int = DEFAULT_TABLE) -> list[str]:
    """What is missing of the routing transparent mode needs on this machine, one sentence each
    with the fix ([] when all of it is in place). Checked: an `ip rule` for marked packets whose
    table routes everything `local` (IPv4 and IPv6; any mark and table will do, `mark` and
    `table` only fill in the fix), the nftables rule that marks packets of transparent sockets.
    Not checkable from here: the hosts' own route back to the clients."""
    found: list[str] = []
    ip = shutil.which("ip")
    if ip is None:
        return ["cannot check the routing: the `ip` command (iproute2) is not installed"]
    for version, default in (("4", "0.0.0.0/0"), ("6", "::/0")):
        tables = sorted({str(r.get("table")) for r in _json([ip, f"-{version}", "-j", "rule", "show"])
                         if r.get("fwmark") is not None})
        local = [name for name in tables
                 if any(r.get("type") == "local" and r.get("dst") in ("default", default)
                        for r in _json([ip, f"-{version}", "-j", "route", "show", "table", name]))]
        if not local:
            found.append(f"IPv{version}: no `ip rule` sends marked packets to a table that delivers them here, so "
                         "the servers' replies to clients' addresses are forwarded or dropped (run: "
                         f"ip -{version} rule add fwmark {mark:#x} lookup {table}; "
                         f"ip -{version} route add local {default} dev lo table {table})")
    found.extend(_nft_findings(mark))
    return found


def _nft_findings(mark: int) -> list[str]:
    nft = shutil.which("nft")
    fix = f"(run: {SCRIPT} up, or add: meta l4proto tcp socket transparent 1 meta mark set {mark:#x})"
    if nft is None:
        if shutil.which("iptables") is not None:
            return []  # iptables' `-m socket --transparent` may do it: not readable here
        return [f"nftables is not installed: nothing marks the replies for transparent sockets {fix}"]
    try:
        done = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"cannot read the nftables ruleset ({exc}): check that replies for transparent sockets are marked"]
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        return [f"cannot read the nftables ruleset ({why}; run check-config as root to check it): replies for "
                f"transparent sockets must be marked {fix}"]
    if '"socket"' not in done.stdout:
        return [f"no nftables rule matches transparent sockets (`socket transparent 1`), so the servers' replies "
                f"are not delivered to the balancer {fix}"]
    return []


def _json(argv: list[str]) -> list[dict[str, object]]:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired, ValueError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
        if done.returncode == 0 and done.stdout.strip():
            value = json.loads(done.stdout)
            return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
    return []
