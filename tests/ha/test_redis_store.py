"""Two balancer nodes (127.0.0.2 and 127.0.0.3) sharing one real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from tests.support.balancer import farm_config, wait_until
from tests.support.fakes import FakeRdpServer, rdp_connect, start_farm, where
from tests.support.redis_server import RedisServer

_prefixes = itertools.count()


def node_config(farm: list[FakeRdpServer], path: Path, host: str, url: str, prefix: str) -> str:
    """A node of the cluster. Redis's timeout is long enough for a loaded 2-core machine: a slower
    answer counts as an outage, and the node would route from its own table. The outages of
    these tests are a stopped redis-server or a closed link, refused at once."""
    text = farm_config([(s.name, s.address, 1) for s in farm], path, listen=host if ":" in host else f"{host}:0")
    return text.replace("[sticky]\n", '[sticky]\nstore = "redis"\n', 1) + f"""
[sticky.redis]
url = "{url}"
key_prefix = "{prefix}"
timeout = "2s"
"""


@asynccontextmanager
async def two_nodes(farm: list[FakeRdpServer], tmp_path: Path, url: str) -> AsyncIterator[tuple[Balancer, Balancer]]:
    prefix = f"t{next(_prefixes)}:"
    nodes = [Balancer(parse_config(node_config(farm, tmp_path / f"node{i}.db", f"127.0.0.{i + 1}", url, prefix)))
             for i in (1, 2)]
    for node in nodes:
        await node.start()
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            await node.stop()


def port(node: Balancer) -> int:
    return node.addresses[0][1]


async def test_a_user_reaches_the_same_server_through_either_node(tmp_path: Path, redis_server: RedisServer) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with two_nodes(farm, tmp_path, redis_server.url) as (one, two):
        homes = {u: await where(port(one), u, host="127.0.0.2") for u in ("alice", "bob", "carol")}
        for user, home in homes.items():
            assert await where(port(two), user, host="127.0.0.3") == home
        # and back, after node two knows them too
        for user, home in homes.items():
            assert await where(port(one), user, host="127.0.0.2") == home
    for s in farm:
        await s.stop()


async def test_new_users_arriving_at_both_nodes_at_once_get_one_server_each(tmp_path: Path,
                                                                           redis_server: RedisServer) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with two_nodes(farm, tmp_path, redis_server.url) as (one, two):
        users = [f"user{i:03d}" for i in range(200)]
        # node two sees TS01 drained, node one does not: left alone they would disagree
        two.ops.set_admin_state("TS01", "drain")
        pairs = await asyncio.gather(*(asyncio.gather(rdp_connect(port(one), u, host="127.0.0.2"),
                                                      rdp_connect(port(two), u, host="127.0.0.3")) for u in users))
        split = [u for u, (a, b) in zip(users, pairs, strict=True) if a.server != b.server]
        assert not split, f"{len(split)} users got two servers, e.g. {split[:5]}"
        for a, b in pairs:
            await a.close()
            await b.close()
        stored = redis.Redis.from_url(redis_server.url)
        prefix = one.store.settings.key_prefix  # type: ignore[union-attr]
        assert len(list(stored.scan_iter(match=f"{prefix}u:*", count=1000))) == 200
        stored.close()
        assert one.store.conflicts + two.store.conflicts > 0  # type: ignore[union-attr]  # the race happened
    for s in farm:
        await s.stop()


async def test_redis_outage_routing_goes_on_and_the_later_assignment_wins(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    own = RedisServer(tmp_path / "redis")
    own.start()
    farm = await start_farm("TS01", "TS02")
    try:
        async with two_nodes(farm, tmp_path, own.url) as (one, two):
            alice = await where(port(one), "alice", host="127.0.0.2")
            own.stop()
            # known users and new users are served by both nodes, from their own tables
            assert await where(port(one), "alice", host="127.0.0.2") == alice
            one.ops.set_admin_state("TS02", "drain")
            two.ops.set_admin_state("TS01", "drain")
            assert await where(port(one), "dave", host="127.0.0.2") == "TS01"
            await asyncio.sleep(0.05)
            assert await where(port(two), "dave", host="127.0.0.3") == "TS02"  # later: this one wins
            assert one.store.available is False  # type: ignore[union-attr]
            own.start()
            await wait_until(lambda: not one.store.unsaved and not two.store.unsaved, 15)  # type: ignore[union-attr]
            assert "sticky conflict after the Redis outage: user dave" in caplog.text
            stored = redis.Redis.from_url(own.url)
            prefix = one.store.settings.key_prefix  # type: ignore[union-attr]
            assert stored.hget(f"{prefix}u:dave", "server") == b"TS02"
            stored.close()
            one.ops.set_admin_state("TS02", "ready")
            assert await where(port(one), "dave", host="127.0.0.2") == "TS02"
    finally:
        own.close()
        for s in farm:
            await s.stop()


async def test_drain_and_session_counts_are_shared_by_the_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    farm = await start_farm("TS01", "TS02")
    try:
        async with two_nodes(farm, tmp_path, redis_server.url) as (one, two):
            clients = [await rdp_connect(port(one), f"held{i}", host="127.0.0.2") for i in range(6)]
            # node two counts node one's sessions in its leastconn (within a heartbeat or two)
            await wait_until(lambda: sum(two.router.external.values()) == 6, 10)
            one.ops.set_admin_state("TS01", "drain")
            await wait_until(lambda: two.router.condition("TS01").admin == "drain", 10)
            assert {await where(port(two), f"new{i}", host="127.0.0.3") for i in range(5)} == {"TS02"}
            for c in clients:
                await c.close()
            await wait_until(lambda: sum(two.router.external.values()) == 0, 10)
    finally:
        for s in farm:
            await s.stop()


async def test_new_users_at_both_nodes_balance_the_cluster_as_a_whole(tmp_path: Path,
                                                                      redis_server: RedisServer) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    try:
        async with two_nodes(farm, tmp_path, redis_server.url) as (one, two):
            # node one holds 30 sessions on TS01; node two knows only through the heartbeat
            for i in range(30):
                await one.ops.set_sticky(f"held{i}", "TS01")
            held = [await rdp_connect(port(one), f"held{i}", host="127.0.0.2") for i in range(30)]
            await wait_until(lambda: two.router.external["TS01"] == 30, 10)
            # 60 new users at node one, then (a heartbeat later) 60 at node two, each wave at once
            clients = await asyncio.gather(*(rdp_connect(port(one), f"a{i}", host="127.0.0.2") for i in range(60)))
            await wait_until(lambda: sum(two.router.external.values()) == 90, 10)
            clients += await asyncio.gather(*(rdp_connect(port(two), f"b{i}", host="127.0.0.3") for i in range(60)))
            placed = Counter(c.server for c in clients) + Counter({"TS01": 30})
            # node one filled TS02 and TS03 to 30 each; node two, counting all 90, spread 20/20/20
            assert all(48 <= placed[s] <= 52 for s in ("TS01", "TS02", "TS03")), placed
            for c in [*held, *clients]:
                await c.close()
    finally:
        for s in farm:
            await s.stop()


async def test_each_node_follows_the_cluster_table_and_weights(tmp_path: Path, redis_server: RedisServer) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    try:
        async with two_nodes(farm, tmp_path, redis_server.url) as (one, two):
            homes = {f"user{i}": await where(port(one), f"user{i}", host="127.0.0.2") for i in range(12)}
            # node two learns them from the change feed without being asked about them
            await wait_until(lambda: all((e := two.table.get(u, time.time())) is not None and e.server == s
                                         for u, s in homes.items()), 10)
            for server in ("TS01", "TS02", "TS03"):
                assert two.table.homed(server) == one.table.homed(server) == 4  # homed counts agree
            # ... and what node two learned is in its own SQLite copy, for a Redis outage
            await two.store.barrier()
            assert {e.key for e in two.store.local.load()} >= set(homes)  # type: ignore[union-attr]
            assert await one.ops.delete_sticky("user0")
            await wait_until(lambda: two.table.get("user0", time.time()) is None, 10)
            one.ops.set_weight("TS03", 0)
            await wait_until(lambda: two.ops.weight_overrides.get("TS03") == 0, 10)
            assert {await where(port(two), f"fresh{i}", host="127.0.0.3") for i in range(6)} <= {"TS01", "TS02"}
    finally:
        for s in farm:
            await s.stop()


async def test_a_node_whose_wall_clock_runs_a_day_ahead_trims_no_change_from_the_shared_feed(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change feed's stamps are Redis's clock; the heartbeat trims stamps older than the ttl
    (+ slack) by that clock too. It trimmed by the node's own wall clock: one node a day ahead
    emptied the feed, and every other node missed the changes in it."""
    from rdpbalancer.store.redis import RedisCluster, RedisSettings, RedisStickyStore  # noqa: PLC0415
    from rdpbalancer.store.sqlite import SqliteStickyStore  # noqa: PLC0415

    prefix = f"clock{time.monotonic_ns()}:"
    store = RedisStickyStore(RedisSettings(url=redis_server.url, key_prefix=prefix), ttl_s=3600,
                             local=SqliteStickyStore(tmp_path / "local.db"))
    store.start(asyncio.get_running_loop())
    client = redis.Redis(port=redis_server.port)
    try:
        seconds, micros = client.time()
        client.zadd(f"{prefix}changes", {"alice": seconds * 1000 + micros // 1000})
        monkeypatch.setattr(time, "time", lambda: seconds + 86400.0 * 2)  # the node's clock: 2 days ahead
        assert await RedisCluster(store).exchange("a", {"TS01": 1}, 3.0) is not None
        assert client.zscore(f"{prefix}changes", "alice") is not None
        client.zadd(f"{prefix}changes", {"bob": (seconds - 3600 - 7200) * 1000})  # older than ttl + slack
        await RedisCluster(store).exchange("a", {"TS01": 1}, 3.0)
        assert client.zscore(f"{prefix}changes", "bob") is None and client.zscore(f"{prefix}changes", "alice")
    finally:
        client.close()
        await store.close()


async def beat(cluster: object, timeout_s: float = 5.0) -> None:
    """Heartbeats until one reaches Redis (after a cut connection the store retries every second)."""
    deadline = time.monotonic() + timeout_s
    while await cluster.exchange("n", {}, 3.0) is None:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "Redis did not answer the heartbeat"
        await asyncio.sleep(0.1)


class MovableAddress:
    """A TCP address in front of one Redis, moved to another as a virtual IP moves: the
    connections through it are cut, and new ones reach the new target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.pipes |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.pipes -= {writer, up_writer}

    def move(self, target: int) -> None:
        self.target = target
        for w in list(self.pipes):
            w.transport.abort()

    async def close(self) -> None:
        self.move(0)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_node_that_wrote_to_a_master_later_demoted_writes_again_and_reads_the_whole_feed(
        tmp_path: Path) -> None:
    """A split brain: Redis B (A's replica) is promoted while node X still reaches A. Y writes
    a user to B, X writes one to A, which acknowledges it; then A is demoted (its data replaced
    by B's) and X's address moves to B. X must notice the other master (run_id and replication
    id), write its recent changes again, and read B's change feed from its start: its cursor
    had moved past Y's stamp while it read A's feed. Before this, X's user was lost and X never
    learned Y's."""
    from rdpbalancer.policy.sticky import Change, StickyEntry  # noqa: PLC0415
    from rdpbalancer.store.redis import RedisCluster, RedisSettings, RedisStickyStore  # noqa: PLC0415
    from rdpbalancer.store.sqlite import SqliteStickyStore  # noqa: PLC0415

    a, b = RedisServer(tmp_path / "a"), RedisServer(tmp_path / "b")
    a.start()
    b.start()
    ca, cb = redis.Redis(port=a.port), redis.Redis(port=b.port)
    vx, vy = MovableAddress(a.port), MovableAddress(a.port)
    stores: list[RedisStickyStore] = []
    try:
        cb.replicaof("127.0.0.1", a.port)
        await wait_until(lambda: cb.info("replication").get("master_link_status") == "up", timeout_s=10)
        x_port, y_port = await vx.start(), await vy.start()
        for name, port_ in (("x", x_port), ("y", y_port)):
            store = RedisStickyStore(RedisSettings(url=f"redis://127.0.0.1:{port_}/0", key_prefix="split:"),
                                     ttl_s=3600, local=SqliteStickyStore(tmp_path / f"{name}.db"))
            await asyncio.to_thread(store.load)
            store.start(asyncio.get_running_loop())
            stores.append(store)
        x, y = stores
        cx, cy = RedisCluster(x), RedisCluster(y)
        for cluster in (cx, cy):
            assert await cluster.exchange("n", {}, 3.0) is not None
            assert await cluster.pull() == []  # the cursor starts now
        now = time.time()
        await x.apply(Change(put=(StickyEntry("early", "p", "TS01", now, now),)))
        await wait_until(lambda: cb.hget("split:u:early", "server") == b"TS01", timeout_s=5)  # replicated

        # the split: B promoted, Y follows it; X still writes to A
        cb.replicaof("NO", "ONE")
        vy.move(b.port)
        await wait_until(lambda: cb.info("replication")["role"] == "master", timeout_s=5)
        await beat(cy)  # the cut connection: Y finds Redis again within a retry, now B
        await y.apply(Change(put=(StickyEntry("yuser", "p", "TS02", now + 1, now + 1),)))
        await asyncio.sleep(0.01)  # X's stamp comes after Y's, by the machines' one clock
        assert await x.apply(Change(put=(StickyEntry("xuser", "p", "TS03", now + 2, now + 2),))) == []
        assert ca.hget("split:u:xuser", "server") == b"TS03"  # acknowledged by A
        pulled = await cx.pull()
        assert pulled is not None and "xuser" in dict(pulled) and "yuser" not in dict(pulled)  # A's feed lacks Y's

        # the heal: A demoted (its data replaced by B's), X's address moves to B
        ca.replicaof("127.0.0.1", b.port)
        await wait_until(lambda: ca.info("replication").get("master_link_status") == "up", timeout_s=10)
        assert ca.hget("split:u:xuser", "server") is None  # what A acknowledged during the split is gone
        vx.move(b.port)

        learned: dict[str, StickyEntry | None] = {}
        for _ in range(50):  # X's heartbeats, as ClusterSync runs them (bounded: 5 s)
            if await cx.exchange("n", {}, 3.0) is not None:
                learned.update(await cx.pull() or ())
                if cb.hget("split:u:xuser", "server") == b"TS03" and "yuser" in learned:
                    break
            await asyncio.sleep(0.1)
        assert cb.hget("split:u:xuser", "server") == b"TS03", "X's change was not written to the new master"
        assert learned.get("yuser") is not None and learned["yuser"].server == "TS02", learned
        assert cb.hget("split:u:early", "server") == b"TS01"
    finally:
        for store in stores:
            await store.close()
        await vx.close()
        await vy.close()
        ca.close()
        cb.close()
        a.close()
        b.close()


async def test_a_redis_restarted_empty_gets_the_recent_changes_again(tmp_path: Path) -> None:
    """Redis restarted without persistence: another run_id, an empty table. The node's recent
    changes are written again at its next heartbeat; another node's are its own to rewrite."""
    from rdpbalancer.policy.sticky import Change, StickyEntry  # noqa: PLC0415
    from rdpbalancer.store.redis import RedisCluster, RedisSettings, RedisStickyStore  # noqa: PLC0415
    from rdpbalancer.store.sqlite import SqliteStickyStore  # noqa: PLC0415

    server = RedisServer(tmp_path / "r")
    server.start()
    store = RedisStickyStore(RedisSettings(url=server.url, key_prefix="restart:"), ttl_s=3600,
                             local=SqliteStickyStore(tmp_path / "x.db"))
    client = redis.Redis(port=server.port)
    try:
        await asyncio.to_thread(store.load)
        store.start(asyncio.get_running_loop())
        cluster = RedisCluster(store)
        await beat(cluster)
        now = time.time()
        await store.apply(Change(put=(StickyEntry("alice", "p", "TS01", now, now),
                                      StickyEntry("bob", "p", "TS02", now, now))))
        await store.apply(Change(delete=("bob",), prior=(("bob", "TS02"),)))
        assert client.hget("restart:u:alice", "server") == b"TS01"
        server.stop()
        server.start()
        assert client.exists("restart:u:alice") == 0
        deadline = time.monotonic() + 5
        while client.hget("restart:u:alice", "server") != b"TS01":
            assert time.monotonic() < deadline, "the recent change was not written again"
            await cluster.exchange("n", {}, 3.0)
            await asyncio.sleep(0.1)
        assert client.exists("restart:u:bob") == 0  # the deletion stays one
    finally:
        client.close()
        await store.close()
        server.close()


async def test_a_redis_user_without_info_still_serves_and_says_what_it_cannot_notice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A least-privilege ACL user (+@all -@dangerous) may not run INFO: the node loads, writes
    and beats as before, and says once that a change of master goes unnoticed."""
    from rdpbalancer.policy.sticky import Change, StickyEntry  # noqa: PLC0415
    from rdpbalancer.store.redis import RedisCluster, RedisSettings, RedisStickyStore  # noqa: PLC0415
    from rdpbalancer.store.sqlite import SqliteStickyStore  # noqa: PLC0415

    server = RedisServer(tmp_path / "r")
    server.start()
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "rdpb", "on", ">rdpb-test-pw", "~*", "+@all", "-@dangerous")
    store = RedisStickyStore(RedisSettings(url=f"redis://rdpb:rdpb-test-pw@127.0.0.1:{server.port}/0",
                                           key_prefix="acl:"), ttl_s=3600, local=SqliteStickyStore(tmp_path / "x.db"))
    try:
        with caplog.at_level(logging.WARNING, logger="rdpbalancer.store"):
            await asyncio.to_thread(store.load)
            assert store.available is True
            store.start(asyncio.get_running_loop())
            cluster = RedisCluster(store)
            for _ in range(2):
                assert await cluster.exchange("n", {}, 3.0) is not None
            now = time.time()
            await store.apply(Change(put=(StickyEntry("alice", "p", "TS01", now, now),)))
            assert admin.hget("acl:u:alice", "server") == b"TS01" and store.available is True
        said = [r.getMessage() for r in caplog.records if "refuses INFO" in r.getMessage()]
        assert len(said) == 1, said
    finally:
        admin.close()
        await store.close()
        server.close()
