"""Socket options for both legs of a session."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct

# Keepalive: notice a peer that vanished (laptop lid closed, NAT state dropped) within about
# KEEPIDLE + KEEPCNT * KEEPINTVL = 2 minutes, instead of the kernel default of over 2 hours,
# so dead sessions stop counting as load.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 6


def tune(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY (RDP input is small interactive frames) and keepalive."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        tune_socket(sock)


def peer_host(transport: asyncio.BaseTransport) -> tuple[str, int]:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "unknown", 0


def tune_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


_families: dict[str, int] = {}  # host literal -> address family, parsed once per server


async def connect_raw(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking socket with no transport (for the splice relay)."""
    family = _families.get(host)
    address: tuple[str, int] = (host, port)
    if family is None:
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            _families[host] = family
        except ValueError:  # a host name: resolve it each time (off the loop, in the resolver's threads)
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            address = (str(sockaddr[0]), int(sockaddr[1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        tune_socket(sock)
        await _connect(loop, sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[str, int]) -> None:
    """A non-blocking connect to an address literal, then a wait for the socket to be writable.
    uvloop's sock_connect hands every connect to its resolver threads first, even for an IP
    literal: a thread hop per connection on the connection-setup path."""
    err = sock.connect_ex(address)
    if err == 0:
        return
    if err not in (errno.EINPROGRESS, errno.EAGAIN):
        raise OSError(err, os.strerror(err))
    done = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _set_done, done)
    try:
        await done
    finally:
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """Abort with a TCP RST (SO_LINGER 0), not a FIN: the other side must know it was cut."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


# SO_REUSEPORT groups (workers): during a handoff every new connection must reach the listening
# socket the new process inherited (the group's first), so the old workers can close theirs
# without the kernel dropping connections queued on them. A one-instruction classic BPF program
# ("return 0": the socket at index 0) does that; detaching it restores the kernel's hash.
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68


def steer_group_to_first(sock: socket.socket) -> bool:
    """Send the whole SO_REUSEPORT group's new connections to its first socket (the one the
    primary opened before any worker). False where the kernel cannot (logged by the caller)."""
    import ctypes  # noqa: PLC0415 - only here: a pointer for struct sock_fprog

    program = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K 0
    fprog = struct.pack("@HP", 1, ctypes.addressof(program))  # struct sock_fprog {len, filter*}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError:
        return False
    return True


def unsteer_group(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # ENOENT: nothing attached
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
