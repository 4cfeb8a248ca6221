"""Listening sockets: one asyncio server per `[balancer] listen` address."""

from __future__ import annotations

import asyncio
import socket

from rdpbalancer.netaddr import format_addr
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.session import ClientSide
from rdpbalancer.relay.sockets import tune_socket

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
            try:
                sock = (inherited or {}).get((host, port))
                if sock is not None:
                    server = await loop.create_server(
                        lambda name=name: ClientSide(ctx, name),  # type: ignore[misc]
                        sock=sock, backlog=LISTEN_BACKLOG, start_serving=serving,
                    )
                else:
                    server = await loop.create_server(
                        lambda name=name: ClientSide(ctx, name),  # type: ignore[misc]
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

