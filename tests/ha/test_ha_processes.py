"""Nodes as real processes: kill -9 of one node, and Redis Sentinel failing over under a node."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from rdpbalancer.app import Balancer
from rdpbalancer.cluster import HEARTBEAT_EXPIRE_S, HEARTBEAT_S
from rdpbalancer.config import parse_config
from tests.ha.test_redis_store import node_config, port
from tests.support.balancer import BalancerProcess, wait_until
from tests.support.fakes import rdp_connect, start_farm, where
from tests.support.redis_server import RedisServer, Sentinel

log = logging.getLogger(__name__)
SLACK_S = 3.0  # a loaded 2-core machine: processes and the event loop run late by this much


def redis_answer(port: int, command: Callable[[redis.Redis], Any]) -> Any:
    """`command` on a fresh connection to the redis-server (or Sentinel) on `port`; None when it
    cannot answer now: refused, reset (a replica drops its clients when it is promoted), timed
    out or loading. The caller's wait tries again until its deadline."""
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return command(client)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return None
    finally:
        client.close()


async def wait_for_redis(port: int, command: Callable[[redis.Redis], Any], want: Callable[[Any], bool],
                         timeout_s: float, interval_s: float = 0.1) -> None:
    """Until `want(answer)`, each answer read on a new connection, in a thread (the balancer
    under test runs on this event loop); TimeoutError with the last answer past the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await asyncio.to_thread(redis_answer, port, command)
        if want(answer):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server on port {port}: last answer {answer!r}")
        await asyncio.sleep(interval_s)


def is_(expected: Any) -> Callable[[Any], bool]:
    return lambda answer: bool(answer == expected)


async def test_kill_9_of_a_node_the_other_serves_everyone_and_its_sessions_leave_the_counts(
        tmp_path: Path, redis_server: RedisServer) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    config = tmp_path / "one.toml"
    config.write_text(node_config(farm, tmp_path / "one.db", "127.0.0.2:0", redis_server.url, "kill9:"))
    one = BalancerProcess(config, 0, tmp_path / "one.log", host="127.0.0.2")  # its port: from its start-up line
    one.start()
    one_port = one.port
    two = Balancer(parse_config(node_config(farm, tmp_path / "two.db", "127.0.0.3:0", redis_server.url, "kill9:")))
    await two.start()
    try:
        users = [f"user{i}" for i in range(9)]
        held = [await rdp_connect(one_port, u, host="127.0.0.2") for u in users]
        homes = {u: c.server for u, c in zip(users, held, strict=True)}
        await wait_until(lambda: sum(two.router.external.values()) == 9, 10)
        assert one.proc is not None
        one.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        one.proc.wait(10)
        one.proc = None
        await wait_until(lambda: sum(two.router.external.values()) == 0, 10, interval_s=0.05)
        left_after = time.monotonic() - killed_at
        log.warning("a killed node's sessions left the shared counts after %.2f s", left_after)
        assert left_after <= HEARTBEAT_EXPIRE_S + HEARTBEAT_S + SLACK_S  # expiry + one heartbeat of node two
        # node two serves everyone: node one's users go home, new users are placed
        for user, home in homes.items():
            assert await where(port(two), user, host="127.0.0.3") == home
        assert await where(port(two), "newcomer", host="127.0.0.3") in {"TS01", "TS02", "TS03"}
        for c in held:
            await c.close()
    finally:
        one.stop()
        await two.stop()
        for s in farm:
            await s.stop()


async def test_sentinel_failover_the_node_follows_the_new_master_and_loses_nothing(tmp_path: Path) -> None:
    master = RedisServer(tmp_path / "master")
    replica = RedisServer(tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(master.port)))
    sentinel = Sentinel(tmp_path / "sentinel", master)
    try:
        master.start()
        replica.start()
        sentinel.start()
        farm = await start_farm("TS01", "TS02")
        text = node_config(farm, tmp_path / "node.db", "127.0.0.2:0", "redis://unused", "sent:")
        text = text.replace('url = "redis://unused"',
                            f'sentinels = ["127.0.0.1:{sentinel.port}"]\nservice_name = "rdpb"')
        node = Balancer(parse_config(text))
        await node.start()
        try:
            alice = await where(port(node), "alice", host="127.0.0.2")
            assert redis_answer(master.port, lambda r: r.hget("sent:u:alice", "server")) == alice.encode()
            await wait_for_redis(replica.port, lambda r: r.hget("sent:u:alice", "server"), is_(alice.encode()), 10)
            # Sentinel knows the replica (from the master's INFO, which it reads every 10 s): else it
            # would find no replica to promote when the master goes
            await wait_for_redis(sentinel.port, lambda r: [(s["port"], s["is_sdown"], s["is_disconnected"])
                                                           for s in r.sentinel_slaves("rdpb")],
                                 is_([(replica.port, False, False)]), 30, interval_s=0.2)
            master.stop()  # Sentinel promotes the replica after about 1 s
            bob = await where(port(node), "bob", host="127.0.0.2")  # served meanwhile, from the local table
            # the replica resets its clients while it is promoted: each read is on a new connection
            await wait_for_redis(replica.port, lambda r: r.role()[0], is_(b"master"), 30, interval_s=0.2)
            await wait_for_redis(replica.port, lambda r: r.hget("sent:u:bob", "server"), is_(bob.encode()), 30)
            await wait_for_redis(replica.port, lambda r: r.hget("sent:u:alice", "server"), is_(alice.encode()), 10)
            assert node.store.available  # type: ignore[union-attr]
            carol = await where(port(node), "carol", host="127.0.0.2")
            await wait_for_redis(replica.port, lambda r: r.hget("sent:u:carol", "server"), is_(carol.encode()), 10)
        finally:
            await node.stop()
            for s in farm:
                await s.stop()
    finally:
        sentinel.stop()
        replica.close()
        master.close()



async def test_a_node_with_workers_reads_redis_before_routing_in_every_process(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Node one (a real process, workers = 2) and node two share the table. A user moved through
    node two must be routed by node one to the new server at once, whichever of its processes
    accepts the connection: a worker's connections skipped the Redis read (15 of 48 went to the
    old server)."""
    farm = await start_farm("TS01", "TS02")
    config = tmp_path / "one.toml"
    text = node_config(farm, tmp_path / "one.db", "127.0.0.2:0", redis_server.url, "workers:")
    config.write_text(text.replace("[balancer]\n", "[balancer]\nworkers = 2\n", 1))
    one = BalancerProcess(config, 0, tmp_path / "one.log", host="127.0.0.2")  # its port: from its start-up line
    one.start()
    one_port = one.port
    two = Balancer(parse_config(node_config(farm, tmp_path / "two.db", "127.0.0.3:0", redis_server.url, "workers:")))
    await two.start()
    try:
        await wait_until(lambda: " worker processes started" in (tmp_path / "one.log").read_text(), 15)
        wrong = 0
        for round_ in range(8):
            target = ("TS01", "TS02")[round_ % 2]
            await two.ops.set_sticky("mover", target)  # durable in Redis when it returns
            landed = [await where(one_port, "mover", host="127.0.0.2") for _ in range(6)]
            wrong += sum(server != target for server in landed)
        assert wrong == 0, f"{wrong} of 48 connections went to the server the user had left"
    finally:
        one.stop()
        await two.stop()
        for s in farm:
            await s.stop()
