"""Test-wide settings: async tests run on uvloop, the loop the balancer uses in production."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.support.redis_server import RedisServer


class _TestLoop(uvloop.Loop):  # type: ignore[misc]
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


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"uvloop": _TestLoop}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session, started when a test first asks for it; tests
    keep apart with their own key prefix."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()
