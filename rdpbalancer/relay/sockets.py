"""Socket options for both legs of a session."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct

from rdpbalancer import tasks
from rdpbalancer.transparent import bind_transparent, source_for

# Keepalive: notice a peer that vanished (laptop lid closed, NAT state dropped) within about
# KEEPIDLE + KEEPCNT * KEEPINTVL = 2 minutes, instead of the kernel default of over 2 hours,
# so dead sessions stop counting as load.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 6


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


def connect_raw(loop: asyncio.AbstractEventLoop, host: str, port: int,
                timeout_s: float, client: str | None = None) -> asyncio.Future[socket.socket]:
    """A connected non-blocking socket with no transport (for the splice relay), as a future:
    no task and no timeout context per connection. It fails with OSError (the connect's errno)
    or TimeoutError after `timeout_s`; cancelling it stops the connect. In every outcome but
    success the socket is closed.

    A non-blocking connect to an address literal, then a wait for the socket to be writable:
    uvloop's sock_connect hands every connect to its resolver threads first, even for an IP
    literal (a thread hop per connection on the connection-setup path).

    `client`: transparent mode, the connection comes from this address (rdpbalancer/transparent.py)
    when its family is the server's; else from the balancer's own."""
    family = _families.get(host)
    if family is None:
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:  # a host name: resolved each time, off the loop (the resolver's threads)
            return tasks.start(_connect_name(loop, host, port, timeout_s, client))
        _families[host] = family
    future: asyncio.Future[socket.socket] = loop.create_future()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        tune_socket(sock)
        if client is not None and (source := source_for(client, family)) is not None:
            bind_transparent(sock, source)
        err = sock.connect_ex((host, port))
    except OSError as exc:  # the transparent bind: EPERM (no capability), EADDRINUSE
        sock.close()
        future.set_exception(exc)
        return future
    except BaseException:
        sock.close()
        raise
    if err in (errno.EINPROGRESS, errno.EAGAIN):
        # A server on this host or a fast LAN has often answered within the first call: asking
        # again (one syscall) spares registering a writer callback and a deadline timer. 0 or
        # EISCONN: connected; EALREADY: still in progress; anything else: how it failed.
        err = sock.connect_ex((host, port))
        if err == errno.EISCONN:
            err = 0
        elif err in (errno.EALREADY, errno.EINPROGRESS):
            _Connecting(loop, sock, future, timeout_s)
            return future
    if err == 0:
        future.set_result(sock)
    else:
        sock.close()
        future.set_exception(OSError(err, os.strerror(err)))
    return future


class _Connecting:
    """One connect in progress: the socket's writability, its deadline, and a cancel."""

    __slots__ = ("fd", "future", "loop", "sock", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 future: asyncio.Future[socket.socket], timeout_s: float) -> None:
        self.loop, self.sock, self.future, self.fd = loop, sock, future, sock.fileno()
        loop.add_writer(self.fd, self._writable)
        self.timer = loop.call_later(timeout_s, self._expired)
        future.add_done_callback(self._done)

    def _writable(self) -> None:
        if not self.future.done():
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.future.set_exception(OSError(err, os.strerror(err)))
            else:
                self.future.set_result(self.sock)

    def _expired(self) -> None:
        if not self.future.done():
            self.future.set_exception(TimeoutError())

    def _done(self, future: asyncio.Future[socket.socket]) -> None:
        self.loop.remove_writer(self.fd)
        self.timer.cancel()
        if future.cancelled() or future.exception() is not None:
            self.sock.close()


async def _connect_name(loop: asyncio.AbstractEventLoop, host: str, port: int, timeout_s: float,
                        client: str | None) -> socket.socket:
    async with asyncio.timeout(timeout_s):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        address = str(sockaddr[0])
        _families[address] = family
        return await connect_raw(loop, address, int(sockaddr[1]), timeout_s, client)


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
