"""The event loop tests run on: uvloop, closing what a failed test left open."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import uvloop


class ClosingLoop(uvloop.Loop):  # type: ignore[misc]
    """uvloop, plus: listening servers a failed test left open are closed with the loop.

    uvloop's close() waits for every handle, and an open server is one: without this, a test
    that fails before its cleanup would hang the whole run (in C, where no timeout can fire).
    """

    def __init__(self) -> None:
        super().__init__()
        self._servers: weakref.WeakSet[asyncio.AbstractServer] = weakref.WeakSet()

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        server = await super().create_server(*args, **kwargs)
        self._servers.add(server)
        return server

    def close(self) -> None:
        for server in list(self._servers):
            server.close()
        super().close()
