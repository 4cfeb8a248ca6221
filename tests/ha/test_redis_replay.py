"""A node that lost Redis replays its deletions as it would have written them online: only
where Redis still holds the server the node believed, so an entry another node wrote during
the outage survives (in Redis and, through the change feed, in every node's table).

Two balancer nodes on one real redis-server; node one reaches it through a TCP link the test
cuts and restores, so node two keeps Redis while node one has lost it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import redis

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from rdpbalancer.store.redis import RedisStickyStore
from tests.ha.test_redis_store import node_config
from tests.support.balancer import wait_until
from tests.support.fakes import start_farm
from tests.support.redis_server import RedisServer

_prefixes = itertools.count()
STOP_BOUND_S = 30.0  # a node stops in well under a second; pytest-timeout cannot interrupt an idle uvloop


class Link:
    """A TCP relay to Redis on loopback: cut() closes it (listener and open connections, so the
    node's next command fails and its reconnects are refused), restore() listens again: the first
    time on port 0, then on the port that one took. (Held bound while cut, with `hold_port`, the
    port made the replay tests hang now and then: the port is free while cut, as before.)"""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self.port, "restore() first: the port is the one its listener took"
        return f"redis://127.0.0.1:{self.port}/0"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()


@asynccontextmanager
async def linked_nodes(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[Balancer, Balancer, Link]]:
    """Node one (127.0.0.2) through a Link, node two (127.0.0.3) straight to Redis; one key prefix."""
    farm = await start_farm("TS01", "TS02", "TS03")
    link = Link(redis_server.port)
    await link.restore()
    prefix = f"replay{next(_prefixes)}:"
    one = Balancer(parse_config(node_config(farm, tmp_path / "one.db", "127.0.0.2", link.url, prefix)))
    two = Balancer(parse_config(node_config(farm, tmp_path / "two.db", "127.0.0.3", redis_server.url, prefix)))
    started: list[Balancer] = []
    try:
        for node in (one, two):
            await node.start()
            started.append(node)
        yield one, two, link
    finally:
        for node in started:
            async with asyncio.timeout(STOP_BOUND_S):  # a hung stop fails here, with where it waited
                await node.stop()
        await link.cut()
        for s in farm:
            await s.stop()


def store(node: Balancer) -> RedisStickyStore:
    assert isinstance(node.store, RedisStickyStore)
    return node.store


def server_of(node: Balancer, user: str) -> str | None:
    entry = node.table.get(user, time.time())
    return None if entry is None else entry.server


def stored_server(redis_server: RedisServer, node: Balancer, user: str) -> str | None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        value = cast("bytes | None", client.hget(f"{store(node).settings.key_prefix}u:{user}", "server"))
    finally:
        client.close()
    return None if value is None else value.decode()


@pytest.mark.parametrize("moved_first", [False, True], ids=["deleted", "moved-then-deleted"])
@pytest.mark.parametrize("other_node_writes", [True, False], ids=["other-node-wrote", "nobody-else-wrote"])
async def test_a_deletion_made_during_an_outage_is_replayed_only_where_redis_holds_what_the_node_believed(
        tmp_path: Path, redis_server: RedisServer, other_node_writes: bool, moved_first: bool) -> None:
    async with linked_nodes(tmp_path, redis_server) as (one, two, link):
        await one.ops.set_sticky("alice", "TS02")
        await wait_until(lambda: server_of(two, "alice") == "TS02", 10)  # node two has it from the feed
        await link.cut()
        await wait_until(lambda: store(one).available is False, 10)  # node one's heartbeat noticed
        # node one, offline, decides about alice as it knows her (on TS02)
        if moved_first:
            # a failover to TS03 (written where Redis holds TS02), then TS03 is removed from node
            # one's configuration: queued together, the deletion still applies to TS02
            one.store.apply_later(one.table.assign("alice", "default", "TS03", time.time()))
            one.store.apply_later(one.table.delete_server("TS03"))
        else:
            one.store.apply_later(one.table.delete_server("TS02"))  # what a reload without TS02 writes
        assert server_of(one, "alice") is None
        if other_node_writes:
            await two.ops.set_sticky("alice", "TS01")  # meanwhile node two moves alice, in Redis at once
            assert stored_server(redis_server, one, "alice") == "TS01"
        await link.restore()
        await wait_until(lambda: store(one).available and not store(one).unsaved, 15)
        # stamped in the change feed after the replay: once node two has it, it has pulled the replay
        await one.ops.set_sticky("marker", "TS01")
        await wait_until(lambda: server_of(two, "marker") == "TS01", 10)
        if other_node_writes:
            assert stored_server(redis_server, one, "alice") == "TS01"
            assert server_of(two, "alice") == "TS01"
            await wait_until(lambda: server_of(one, "alice") == "TS01", 10)  # node one follows the cluster
            assert store(one).conflicts >= 1
        else:
            assert stored_server(redis_server, one, "alice") is None  # replayed
            assert server_of(two, "alice") is None
            assert server_of(one, "alice") is None
