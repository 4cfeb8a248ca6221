"""Listening sockets: one asyncio server per `[balancer] listen` address."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket

from rdpbalancer.netaddr import format_addr
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.session import ClientSide
from rdpbalancer.relay.sockets import tune_socket

log = logging.getLogger("rdpbalancer")

LISTEN_BACKLOG = 1024  # a logon storm arrives in bursts; the kernel caps it at somaxconn anyway


class ListenError(Exception):
    """A listen address cannot be bound; the message names it."""


async def open_listeners(ctx: RelayContext, addresses: list[tuple[str, int]], *,
                         reuse_port: bool = False, names: list[str] | None = None,
                         inherited: dict[tuple[str, int], socket.socket] | None = None,
                         serving: bool = True) -> list[asyncio.Server]:
    """Listen on `addresses`; `reuse_port`: SO_REUSEPORT, so worker processes share each port
    (the kernel spreads new connections over their sockets). `names`: the listener names
    sessions see (routes match on them), by default the addresses as written. `inherited`:
    already bound sockets to use for some addresses (a handoff). `serving=False`: do not accept
    until `start_serving()`."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        for index, (host, port) in enumerate(addresses):
            name = names[index] if names is not None else format_addr(host, port)
            factory = functools.partial(ClientSide, ctx, name)
            try:
                sock = (inherited or {}).get((host, port))
                if sock is not None:
                    server = await loop.create_server(
                        factory,
                        sock=sock, backlog=LISTEN_BACKLOG, start_serving=serving,
                    )
                else:
                    server = await loop.create_server(
                        factory,
                        host, port, backlog=LISTEN_BACKLOG, reuse_address=True, reuse_port=reuse_port or None,
                        family=socket.AF_INET6 if ":" in host else socket.AF_INET, start_serving=serving,
                    )
            except OSError as exc:
                raise ListenError(f"cannot listen on {name}: {exc.strerror or exc}") from exc
            for sock in server.sockets:
                tune_socket(sock)  # inherited by every accepted connection: no per-accept syscalls
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers



Address = tuple[str, int]


class ListenerSet:
    """The listeners of this process by configured address; a reload opens new ones before it
    swaps and closes the removed ones after (their live sessions go on)."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        self.servers: dict[Address, asyncio.Server] = {}

    def __bool__(self) -> bool:
        return bool(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    async def open(self, wanted: tuple[Address, ...], *, reuse_port: bool,
                   inherited: dict[Address, socket.socket] | None = None, serving: bool = True) -> None:
        """Listen on those of `wanted` not listened on yet (raises ListenError, nothing opened)."""
        new = [a for a in wanted if a not in self.servers]
        opened = await open_listeners(self.ctx, new, reuse_port=reuse_port, inherited=inherited, serving=serving)
        self.servers.update(zip(new, opened, strict=True))

    def close_removed(self, wanted: tuple[Address, ...]) -> None:
        for address in set(self.servers) - set(wanted):
            self.servers.pop(address).close()
            log.info("stopped listening on %s (live sessions go on)", format_addr(*address))

    async def start_serving(self) -> None:
        for server in self.servers.values():
            await server.start_serving()

    def close(self) -> None:
        for server in self.servers.values():
            server.close()

    async def wait_closed(self, timeout_s: float = 1.0) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout_s)

    @property
    def addresses(self) -> list[Address]:
        """The bound addresses (port 0 resolved), in configuration order."""
        return [sock.getsockname()[:2] for server in self.servers.values() for sock in server.sockets]

    def first_sockets(self) -> list[socket.socket]:
        """Each listener's socket (one per address): what SO_REUSEPORT steering acts on."""
        return [server.sockets[0] for server in self.servers.values()]

    def by_fd(self) -> dict[int, Address]:
        """Every listening socket's descriptor and its configured address (passed on by a handoff)."""
        return {sock.fileno(): address for address, server in self.servers.items() for sock in server.sockets}

    def family_of(self, address: Address) -> tuple[int, int]:
        sock = self.servers[address].sockets[0]
        return sock.family, sock.type

    def worker_listen(self) -> tuple[tuple[str, str, int], ...]:
        """(configured name, host, bound port) of each socket: what a worker listens on."""
        return tuple((format_addr(*configured), host, port)
                     for configured, server in self.servers.items()
                     for host, port, *_ in (sock.getsockname() for sock in server.sockets))
