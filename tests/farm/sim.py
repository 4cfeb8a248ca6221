"""The farm simulator (issue 26, part 2): a compressed day of an RDS farm in front of a real
balancer node, with chaos, and the invariants of tests/farm/invariants.py checked all along.

    python3 -m tests.farm.sim --minutes 60 --seed 7 [--users 200 --hosts 8 --out DIR]

The model (tests/farm/hosts.py for the hosts):
- **Time scale.** The protocol's timings run at `scale` real seconds per farm second (default
  0.1: a 2-30 s logon takes 0.2-3 s, hosts push every 15 s -> 1.5 s with +-30 % jitter,
  stale_after 60 s -> 6 s, logon_grace 120 s -> 12 s, failover_after 60 s -> 6 s; health checks
  every 0.5 s, fall 3, rise 2). The users' working day (8 h) is compressed to `--minutes`.
- **Users.** A morning storm (70 % arrive within the first tenth of the day, the rest by
  mid-day), work periods with disconnects (the client closes; back a while later from another
  client address, 127.0.0.x), now and then a logoff and a new logon after lunch, a client that
  drops its connection during a logon and retries at once, an RDP client's auto-reconnect when
  a connection is cut; at the end of the day most log off, some leave a disconnected session.
  Each connect is retried a bounded number of times (a client that gets no answer). Now and
  then two clients of one user connect at once.
- **The node**: `workers = 2`, `leastsessions`, health checks "rdp", `[sessions] source =
  "push"` (tests/farm/node.py). With `--nodes 2`, two nodes share their table in a
  redis-server; the clients reach one of them at a time (keepalived's address), the hosts push
  to both.
- **Chaos** (one node-level event at a time, at most two hosts impaired at once): reload
  (SIGHUP), handoff (SIGUSR2), a worker killed (-9), the node killed (-9) and restarted, the
  balancer's wall clock stepped +-10 min (libfaketime, the balancer's processes only), the
  clock stepped forward and the node killed and restarted, a host's port closed shorter or
  longer than failover_after (sessions kept), a host rebooted (sessions gone), a host silent
  past stale_after or not, a host refusing new logons (deny_new), a host set to maint or drain
  through the admin API; with two nodes, the address moved to the other node and Redis
  stopped answering (SIGSTOP) for 2-8 s; with `--sentinel` too, the master killed (-9) and the
  replica promoted by Sentinel (tests/farm/redis_ha.py). `--weights kind=w,...` changes the mix.
- **Checks**: as the trace comes (tests/farm/invariants.py), each user's entry read while she
  has no connection in flight (12 users every 2 s, all at the end), and at the end of the day:
  the counts at zero (servers, sessions, workers, explain's open connections of each user, old
  processes of handoffs gone), fds flat over 60 more connections, every move and refusal in
  the log with its reason. `--sabotage 0.3` sends connections past the balancer and deletes
  entries: the checker's own test.

A violation prints the seed, the invariant, and the trace of the user it concerns; the whole
trace is written as JSON lines next to the report. A seed replays the same schedule of users
and chaos (the interleaving with the processes is the machine's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdpbalancer.proto import build_connection_request
from rdpbalancer.relay.splice import PIPE_POOL_MAX
from tests.farm.hosts import SimHost
from tests.farm.invariants import Checker
from tests.farm.node import Node, Timings
from tests.farm.redis_ha import SentinelRedis
from tests.support.fakes import WHO, read_tpkt
from tests.support.redis_server import RedisServer

ROUTED = re.compile(r" session=\S+ routed (.*)$")
FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
MORE = re.compile(r"\((\d+) more refused for this reason")
REJECTED = re.compile(r" session=\S+ rejected client=(\S+) user=\S* reason=(.*)$")
CONNECT_TIMEOUT_S = 10.0
CHAOS_WEIGHTS = {"reload": 2, "reload-change": 1, "handoff": 2, "worker-kill": 2, "node-kill": 1, "clock-step": 2,
                 "clock-step-restart": 1, "flap-short": 2, "flap-long": 2, "reboot": 1, "silent": 2,
                 "deny-new": 2, "maint": 1, "drain": 1, "vip-move": 2, "redis-outage": 2,
                 "sentinel-failover": 2}
HA_CHAOS = frozenset({"vip-move", "redis-outage", "sentinel-failover"})  # with two nodes only
NODE_CHAOS = frozenset({"reload", "reload-change", "handoff", "worker-kill", "node-kill", "clock-step",
                        "clock-step-restart", *HA_CHAOS})
MAX_ATTEMPTS = 25  # one connect of a user: bounded


@dataclass
class Params:
    seed: int
    minutes: float = 2.5
    users: int = 40
    hosts: int = 5
    scale: float = 0.1
    workers: int = 2
    faketime: bool = True
    chaos_every_s: float = 5.0  # mean gap between chaos events (real seconds)
    weights: dict[str, float] = field(default_factory=dict)  # over CHAOS_WEIGHTS
    double_click: float = 0.05  # a new connect made by two clients at once
    nodes: int = 1  # 2: two nodes sharing their table in a redis-server, the clients on one at a time
    sentinel: bool = False  # two nodes: Redis as a master, a replica and three sentinels
    # the checker's own test: this share of reconnects goes straight to a random host (past the
    # balancer), and as often an idle user's entry is deleted through the API: violations must show
    sabotage: float = 0.0
    out: Path = Path("farm-sim")

    @property
    def day_s(self) -> float:
        return self.minutes * 60.0


@dataclass(eq=False)
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str
    node: Node


@dataclass
class Farm:
    p: Params
    rng: random.Random
    checker: Checker
    nodes: list[Node]
    hosts: dict[str, SimHost]
    redis: RedisServer | None = None
    sentinel: SentinelRedis | None = None
    vip: int = 0  # the node the clients reach (keepalived's virtual IP)
    t0: float = field(default_factory=time.monotonic)
    outcomes: Counter[str] = field(default_factory=Counter)
    chaos: Counter[str] = field(default_factory=Counter)
    kill_windows: list[tuple[float, float]] = field(default_factory=list)  # a node process killed
    refused_at: list[float] = field(default_factory=list)  # connections closed before an answer
    in_flight: dict[str, int] = field(default_factory=dict)  # user -> connects under way
    generation: Counter[str] = field(default_factory=Counter)
    impaired: set[str] = field(default_factory=set)
    explained: Counter[str] = field(default_factory=Counter)
    cid: int = 0
    stopping: bool = False
    node_busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    _host_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    open: set[Conn] = field(default_factory=set)  # client connections held

    @property
    def node(self) -> Node:
        return self.nodes[self.vip]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, kind: str, **fields: Any) -> None:
        self.checker.feed(self.now(), kind, **fields)

    # -- hosts pushing -----------------------------------------------------------------------------

    async def pusher(self, host: SimHost, interval_s: float) -> None:
        while not self.stopping:
            await asyncio.sleep(interval_s * self.rng.uniform(0.7, 1.3))
            if host.silent or host.down:
                continue
            body = {"sessions": host.listed(), "deny_new": host.deny_new}
            for node in self.nodes:  # each node is pushed to (the scripts take several URLs)
                if await node.push(host.name, body) == 200:
                    host.pushes += 1
                else:
                    host.push_failures += 1

    # -- users -------------------------------------------------------------------------------------

    async def connect(self, user: str, client_ip: str) -> Conn | None:
        """One user's connect, retried like a client (bounded): the connection, or None."""
        for attempt in range(MAX_ATTEMPTS):
            if self.stopping:
                return None
            self.cid += 1
            cid = self.cid
            self.in_flight[user] = self.in_flight.get(user, 0) + 1
            self.generation[user] += 1
            try:
                before = await self.explain_before(user) if user in self.checker.last_host else None
                self.record("connect", user=user, cid=cid, attempt=attempt, client=client_ip, node=self.node.name)
                conn = await self._attempt(user, cid, client_ip)
            finally:
                self.in_flight[user] -= 1
            if conn is not None:
                self.note_explain(user, before, conn.host)
                return conn
            await asyncio.sleep(self.rng.uniform(0.2, 1.0) * (1 + min(attempt, 4) / 2))
        self.outcomes["gave-up"] += 1
        self.record("gave_up", user=user)
        return None

    async def _attempt(self, user: str, cid: int, client_ip: str) -> Conn | None:
        stage = "connect"
        writer = None
        node = self.node
        port = node.port
        if self.p.sabotage and user in self.checker.last_host and self.rng.random() < self.p.sabotage:
            port = self.rng.choice(list(self.hosts.values())).port  # past the balancer
            self.record("sabotage", user=user, what="connects straight to a host")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                               local_addr=(client_ip, 0))
                stage = "answer"
                writer.write(build_connection_request(cookie=user.encode()))
                await read_tpkt(reader)
                stage = "who"
                writer.write(WHO)
                line = (await reader.readline()).decode().strip()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            sockname = writer.get_extra_info("sockname") if writer is not None else None
            if writer is not None:
                writer.transport.abort()
            kind = {"connect": "unreachable", "answer": "refused", "who": "cut-after-answer"}[stage]
            if isinstance(exc, TimeoutError):
                kind += "-timeout"
            if kind == "refused":
                self.refused_at.append(self.now())
            self.outcomes[kind] += 1
            self.record("connect_fail", user=user, cid=cid, why=kind, error=type(exc).__name__,
                        client=f"{sockname[0]}:{sockname[1]}" if sockname else None)
            self.record("connect_end", cid=cid)
            return None
        if not line:
            local = writer.get_extra_info("sockname")
            writer.transport.abort()
            self.outcomes["cut-after-answer"] += 1
            self.record("connect_fail", user=user, cid=cid, why="cut-after-answer", error="empty",
                        client=f"{local[0]}:{local[1]}" if local else None)
            self.record("connect_end", cid=cid)
            return None
        host = line.split()[0]
        local = writer.get_extra_info("sockname")
        client = f"{local[0]}:{local[1]}" if local else None
        if line.endswith(" denied"):
            writer.transport.abort()
            self.outcomes["logon-denied"] += 1
            self.record("landed", user=user, cid=cid, host=host, denied=True, node=node.name, client=client)
            return None
        self.outcomes["landed"] += 1
        self.record("landed", user=user, cid=cid, host=host, node=node.name, client=client)
        conn = Conn(reader, writer, host, node)
        self.open.add(conn)
        return conn

    async def double_click(self, user: str, client: str) -> Conn | None:
        """Two clients of one user connect at once (two workers may take them): both must land
        where her session is or where the first placed her; the second is closed again."""
        self.record("double_click", user=user)
        other = f"127.0.1.{self.rng.randint(2, 250)}"
        a, b = await asyncio.gather(self.connect(user, client), self.connect(user, other))
        if a is not None and b is not None:
            self.close(b)  # (the host closed one already: a new client takes the session over)
            return a
        return a or b

    async def explain_before(self, user: str) -> dict[str, Any] | None:
        doc = await self.node.get(f"/api/v1/explain?user={user}")
        return doc.get("decision") if isinstance(doc, dict) else None

    async def hold(self, conn: Conn, seconds: float) -> bool:
        """Stay connected for `seconds`; False when the connection was cut before (chaos)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(conn.reader.read(1024), left)
            except TimeoutError:
                return True
            except OSError:
                return False
            if not data:
                return False
        return True

    def close(self, conn: Conn) -> None:
        self.open.discard(conn)
        if conn.writer.transport is not None:
            conn.writer.transport.abort()

    async def user_day(self, user: str) -> None:
        day, rng = self.p.day_s, self.rng
        arrive = rng.uniform(0.02, 0.12) * day if rng.random() < 0.7 else rng.uniform(0.1, 0.5) * day
        leave = rng.uniform(0.8, 0.93) * day
        logs_off = rng.random() < 0.75
        await asyncio.sleep(arrive)
        conn: Conn | None = None
        while not self.stopping and self.now() < leave:
            client = f"127.0.0.{rng.randint(2, 250)}"
            if rng.random() < self.p.double_click:
                conn = await self.double_click(user, client)
            else:
                conn = await self.connect(user, client)
            if conn is None:
                await asyncio.sleep(rng.uniform(1, 3))
                continue
            if rng.random() < 0.12:  # a client that drops its connection during a logon and retries
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                self.close(conn)
                self.record("client_retry", user=user, host=conn.host)
                conn = await self.connect(user, client)
                if conn is None:
                    continue
            work = min(max(2.0, rng.expovariate(1 / (0.12 * day))), max(0.5, leave - self.now()))
            if not await self.hold(conn, work):
                self.record("cut", user=user, host=conn.host)  # auto-reconnect after a moment
                self.close(conn)
                conn = None
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                continue
            if self.now() >= leave:
                break
            if rng.random() < 0.15:  # logs off at lunch, logs on again later
                if conn.host in self.hosts:
                    self.hosts[conn.host].logoff(user)
                self.close(conn)
                conn = None
                await asyncio.sleep(rng.uniform(0.03, 0.08) * day)
                continue
            self.close(conn)  # a disconnect: back later, from another client
            self.record("disconnect", user=user, host=conn.host)
            conn = None
            await asyncio.sleep(max(0.3, rng.expovariate(1 / (0.03 * day))))
        if conn is not None:
            if logs_off and conn.host in self.hosts:
                self.hosts[conn.host].logoff(user)
            self.close(conn)
        elif logs_off:
            for h in self.hosts.values():  # a user who left disconnected logs on and off at the end
                if h.has(user):
                    h.logoff(user)
        self.record("day_over", user=user, logged_off=logs_off)

    def note_explain(self, user: str, before: dict[str, Any] | None, landed: str) -> None:
        """Explain, asked just before a reconnect, against where she landed (a move must show)."""
        if before is None:
            return
        servers = before.get("servers") or []
        if servers and servers[0] == landed:
            self.explained["agreed"] += 1
        else:
            self.explained["differed"] += 1  # state changed between explain and the connect
            self.record("explain_differed", user=user, landed=landed, reason=before.get("reason"),
                        servers=",".join(servers), detail=str(before.get("detail", ""))[:120])

    # -- the sticky table --------------------------------------------------------------------------

    async def sticky_checker(self) -> None:
        users = sorted(self.checker.last_host)
        while not self.stopping:
            await asyncio.sleep(2.0)
            users = sorted(self.checker.last_host)
            for user in self.rng.sample(users, min(12, len(users))):
                if self.p.sabotage and self.rng.random() < self.p.sabotage and not self.in_flight.get(user):
                    status = await self.node.delete(f"/api/v1/sticky/{user}")
                    self.record("sabotage", user=user, what=f"entry deleted through the API ({status})")
                await self.check_sticky(user)

    async def check_sticky(self, user: str, node: Node | None = None) -> None:
        """Her entry as `node` (the one the clients reach) has it, if she has no connect in flight."""
        node = node or self.node
        if self.in_flight.get(user) or self.node_busy.locked():
            return
        gen = self.generation[user]
        doc = await node.get(f"/api/v1/sticky/{user}")
        if doc is None or self.in_flight.get(user) or self.generation[user] != gen or self.node_busy.locked():
            return
        server = None if doc.get("status") == 404 else doc.get("server")
        self.record("sticky", user=user, server=server, node=node.name)

    # -- chaos ---------------------------------------------------------------------------------------

    def outage_target(self) -> RedisServer | None:
        """The redis-server to stop: the one, or the master Sentinel names."""
        server = self.sentinel.outage_target() if self.sentinel is not None else self.redis
        return server if server is not None and server.proc is not None else None

    async def chaos_loop(self) -> None:
        kinds = {**CHAOS_WEIGHTS, **self.p.weights}
        if self.sentinel is None:
            kinds.pop("sentinel-failover")
        names, weights = list(kinds), list(kinds.values())
        await asyncio.sleep(0.08 * self.p.day_s)  # the storm first
        while not self.stopping and self.now() < 0.85 * self.p.day_s:
            await asyncio.sleep(self.rng.expovariate(1 / self.p.chaos_every_s))
            kind = self.rng.choices(names, weights)[0]
            await self.one_chaos(kind)

    async def one_chaos(self, kind: str) -> None:
        rng, fo = self.rng, self.node.timings.failover_after_s
        node = rng.choice(self.nodes)
        if kind in HA_CHAOS and self.redis is None and self.sentinel is None:
            return
        if kind == "sentinel-failover" and self.sentinel is None:
            return
        if kind in NODE_CHAOS:
            if self.node_busy.locked():
                return
            async with self.node_busy:
                self.chaos[kind] += 1
                self.record("chaos", what=kind, node=node.name)
                if kind == "reload-change":
                    node.reload(change=True)
                    self.record("reload_changed", node=node.name, changed=node.changed)
                elif kind == "vip-move":
                    self.move_vip()
                elif kind == "redis-outage" and (server := self.outage_target()) is not None:
                    self.record("redis_down")
                    assert server.proc is not None
                    server.proc.send_signal(signal.SIGSTOP)  # no answer (its data kept)
                    try:  # (with Sentinel, an outage past 1 s is a failover too)
                        await asyncio.sleep(rng.uniform(2.0, 8.0))
                    finally:
                        server.proc.send_signal(signal.SIGCONT)
                    self.record("redis_up")
                elif kind == "sentinel-failover" and self.sentinel is not None:
                    if await self.sentinel.replica_known(10.0):
                        self.record("redis_down")
                        old, new, took = await self.sentinel.kill_master()
                        self.record("sentinel_failover", old=old, new=new, took=round(took, 2))
                        self.record("redis_up")
                    else:
                        self.chaos["sentinel-no-replica"] += 1
                if kind == "reload":
                    node.reload()
                elif kind == "handoff":
                    start = self.now()
                    ok = await node.handoff()
                    self.kill_windows.append((start, self.now() + 1))
                    self.record("handoff_done", ok=ok, primary=node.primary, file_fds=node.file_fds())
                    if not ok:
                        self.chaos["handoff-failed"] += 1
                elif kind == "worker-kill":
                    start = self.now()
                    pid = await node.kill_worker()
                    self.kill_windows.append((start, self.now() + 2))
                    self.record("worker_killed", pid=pid)
                elif kind == "node-kill":
                    start = self.now()
                    if len(self.nodes) > 1 and node is self.node:
                        self.move_vip()  # keepalived moves the address to the other node
                    await node.kill_and_restart()
                    self.kill_windows.append((start, self.now() + 1))
                    self.record("node_restarted", primary=node.primary)
                elif kind == "clock-step" and node.clock is not None:
                    step = rng.choice([-600.0, 600.0])
                    node.clock.step(step)
                    self.record("clock_step", seconds=step, offset=node.clock.offset)
                elif kind == "clock-step-restart" and node.clock is not None:
                    # the wall clock corrected forward (NTP), then the node killed and started again
                    # while users are in their logons: the new process reads the stepped clock
                    node.clock.step(600.0)
                    self.record("clock_step", seconds=600.0, offset=node.clock.offset)
                    await asyncio.sleep(rng.uniform(0.5, 3.0))
                    start = self.now()
                    if len(self.nodes) > 1 and node is self.node:
                        self.move_vip()
                    await node.kill_and_restart()
                    self.kill_windows.append((start, self.now() + 1))
                    self.record("node_restarted", primary=node.primary)
                await asyncio.sleep(0.5)
            return
        free = [h for h in self.hosts.values() if h.name not in self.impaired]
        if len(self.impaired) >= 2 or not free:
            return
        host = rng.choice(free)
        self.impaired.add(host.name)
        self.chaos[kind] += 1
        task = asyncio.get_running_loop().create_task(self.host_chaos(kind, host, fo))
        self._host_tasks.add(task)
        task.add_done_callback(self._host_tasks.discard)

    def move_vip(self) -> None:
        """The clients' address moves to the other node: every connection through the old one is
        cut (as when keepalived moves it: the old node's connections die with its address)."""
        old = self.node
        self.vip = (self.vip + 1) % len(self.nodes)
        self.record("vip_moved", frm=old.name, to=self.node.name)
        for conn in list(self.open):
            if conn.node is old:
                self.close(conn)

    async def host_chaos(self, kind: str, host: SimHost, fo: float) -> None:
        rng = self.rng
        try:
            if kind == "flap-short":
                await host.flap(rng.uniform(0.2, 0.6) * fo)
            elif kind == "flap-long":
                await host.flap(rng.uniform(1.3, 2.0) * fo)
            elif kind == "reboot":
                await host.reboot(rng.uniform(1.0, 4.0))
            elif kind == "silent":
                host.silent = True
                self.record("silent", host=host.name)
                await asyncio.sleep(rng.uniform(0.3, 2.0) * self.node.timings.stale_after_s)
                host.silent = False
                self.record("speaks", host=host.name)
            elif kind == "deny-new":
                host.deny_new = True
                self.record("deny_new", host=host.name, on=True)
                await asyncio.sleep(rng.uniform(3, 10))
                host.deny_new = False
                self.record("deny_new", host=host.name, on=False)
            elif kind in ("maint", "drain"):
                status = await self.node.post(f"/api/v1/servers/{host.name}/state", {"state": kind})
                # only a state the node took excuses anything (a node restarting refuses it)
                self.record("admin_state" if status == 200 else "admin_state_failed", host=host.name,
                            state=kind, status=status)
                await asyncio.sleep(rng.uniform(3, 8))
                for _ in range(20):  # bounded: the node may be restarting
                    status = await self.node.post(f"/api/v1/servers/{host.name}/state", {"state": "ready"})
                    if status == 200:
                        break
                    await asyncio.sleep(0.5)
                self.record("admin_state", host=host.name, state="ready", status=status)
        finally:
            self.impaired.discard(host.name)

    # -- the end of the day ---------------------------------------------------------------------------

    async def probe_connections(self, node: Node, count: int) -> int:
        """`count` connections without a cookie, one after the other, each closed after its answer."""
        landed = 0
        for _ in range(count):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
                    try:
                        writer.write(build_connection_request(cookie=None))
                        await read_tpkt(reader)
                        writer.write(WHO)
                        landed += bool(await reader.readline())
                    finally:
                        writer.transport.abort()
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass
        return landed

    @staticmethod
    async def quiet_fds(node: Node, samples: int = 8) -> int:
        """The node's open fds, the least of a few readings over 2 s: a health check or a Redis
        call in flight holds a socket for a moment."""
        least = None
        for _ in range(samples):
            total = sum(node.fds().values())
            least = total if least is None else min(least, total)
            await asyncio.sleep(0.25)
        return least or 0

    @staticmethod
    async def quiet_file_fds(node: Node, samples: int = 8) -> int:
        """The primary's fds that are not sockets, the least of a few readings over 2 s (the
        table's writer may hold its file for a moment)."""
        least = None
        for _ in range(samples):
            count = node.file_fds()
            least = count if least is None else min(least, count)
            await asyncio.sleep(0.25)
        return least or 0

    async def wait_idle(self, node: Node, timeout_s: float) -> tuple[int, int, int]:
        """Until `node` counts no connection, session or handshake (and no old process of a
        handoff runs); the last counts read."""
        deadline = time.monotonic() + timeout_s
        conns = sessions = handshaking = -1
        while time.monotonic() < deadline:
            servers = await node.get("/api/v1/servers")
            live = await node.get("/api/v1/sessions")
            workers = await node.note_workers()
            if servers and live is not None:
                conns = sum(int(s.get("connections", 0)) for s in servers["servers"])
                sessions = len(live.get("sessions", []))
                handshaking = sum(int(w.get("handshaking", 0)) + int(w.get("sessions", 0)) for w in workers
                                  if w.get("role") == "worker")
                node.gone_draining()
                if conns == sessions == handshaking == 0 and not node.draining:
                    break
            await asyncio.sleep(0.5)
        return conns, sessions, handshaking

    async def idle_checks(self, node: Node) -> dict[str, Any]:
        """Invariant 4, once every client has left: counts back to zero, old processes gone."""
        out: dict[str, Any] = {}
        conns, sessions, handshaking = await self.wait_idle(node, 20)
        t, n = self.now(), node.name
        self.checker.check_idle(f"node {n}: connections counted on the servers", conns, 0, t)
        self.checker.check_idle(f"node {n}: live sessions listed", sessions, 0, t)
        self.checker.check_idle(f"node {n}: sessions and handshakes of the workers", handshaking, 0, t)
        self.checker.check_idle(f"node {n}: old processes of handoffs still running", len(node.draining), 0, t)
        opened = 0
        for user in sorted(self.checker.last_host)[:60]:
            doc = await node.get(f"/api/v1/explain?user={user}")
            if doc and "open or opening connection" in json.dumps(doc):
                opened += 1
                self.record("explain_open", user=user, doc=json.dumps(doc)[:400])
        self.checker.check_idle(f"node {n}: users whose explain counts open connections", opened, 0, t)
        out.update(conns=conns, sessions=sessions, worker_counts=handshaking, draining=len(node.draining),
                   users_with_open_count=opened)
        return out


async def run(p: Params) -> dict[str, Any]:
    """One simulated day; the report (a dict) and the trace written under `p.out`."""
    p.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(p.seed)
    s = p.scale
    timings = Timings(push_interval_s=15 * s, stale_after_s=60 * s, logon_grace_s=120 * s, failover_after_s=60 * s)
    checker = Checker(failover_after_s=timings.failover_after_s, stale_after_s=timings.stale_after_s,
                      recover_s=timings.rise * timings.health_interval_s * 1.3 + timings.health_timeout_s + 1.0)
    names = [f"TS{i + 1:02d}" for i in range(p.hosts)]
    hosts: dict[str, SimHost] = {}
    farm: Farm | None = None

    def record(kind: str, **fields: Any) -> None:
        assert farm is not None
        farm.record(kind, **fields)

    for name in names:
        hosts[name] = await SimHost(name, record=record, rng=random.Random(rng.random()),
                                    logon_s=(2 * s, 30 * s)).start()
    tokens = {n: f"{n.lower()}-farm-push-token-{p.seed}" for n in names}
    sentinel = SentinelRedis(p.out / "redis") if p.nodes > 1 and p.sentinel else None
    redis = RedisServer(p.out / "redis") if p.nodes > 1 and sentinel is None else None
    nodes = [Node(p.out / f"node{chr(65 + i)}", [(n, h.address) for n, h in hosts.items()], tokens, timings,
                  workers=p.workers, faketime=p.faketime, redis_url=redis.url if redis else None,
                  sentinels=sentinel.addresses if sentinel else (), name=chr(65 + i))
             for i in range(p.nodes)]
    farm = Farm(p, rng, checker, nodes, hosts, redis=redis, sentinel=sentinel)
    tasks: list[asyncio.Task[None]] = []
    started = time.time()
    report: dict[str, Any] = {}
    try:
        if redis is not None:
            redis.start()
        if sentinel is not None:
            sentinel.start()
        for node in nodes:
            await node.start()
        farm.t0 = time.monotonic()
        farm.record("start", seed=p.seed, users=p.users, hosts=p.hosts, minutes=p.minutes, scale=p.scale,
                    nodes=p.nodes)
        fds_start = {node.name: (node.fds(), node.primary) for node in nodes}
        files_start = {node.name: node.file_fds() for node in nodes}
        file_targets_start = {node.name: Counter(node.file_fd_targets()) for node in nodes}
        loop = asyncio.get_running_loop()
        for h in hosts.values():
            tasks.append(loop.create_task(farm.pusher(h, timings.push_interval_s)))
        users = [loop.create_task(farm.user_day(f"u{i:04d}")) for i in range(p.users)]
        side = [loop.create_task(farm.chaos_loop()), loop.create_task(farm.sticky_checker())]
        tasks += side
        # bounded: every user's day ends by 0.93 of it; her last connect is bounded too
        _done, late = await asyncio.wait(users, timeout=p.day_s + MAX_ATTEMPTS * 12)
        for task in late:
            task.cancel()
        farm.stopping = True
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        for task in list(farm._host_tasks):
            await asyncio.wait_for(task, 30)
        await asyncio.sleep(2.0)  # (two nodes: the last changes reach the other through Redis)
        for user in list(farm.checker.last_host):
            for node in nodes:  # every user's entry, at the end, on each node (one table in Redis)
                await farm.check_sticky(user, node)
        idle: dict[str, Any] = {}
        for node in nodes:
            idle[node.name] = await farm.idle_checks(node)
        fds_end = {node.name: node.fds() for node in nodes}
        for user in users:
            if not user.cancelled() and user.exception() is not None:
                raise user.exception()  # type: ignore[misc]
        t = farm.now()
        routed: list[dict[str, str]] = []
        refused_logged = 0
        for node in nodes:
            node_routed, node_refused = read_log(node.log)
            routed += node_routed
            refused_logged += node_refused
        checker.check_moves_logged(routed, t)
        checker.check_drain(routed, timings.push_interval_s * 1.3 + 1.0, t)
        seen = [r for r in farm.refused_at if not any(a - 1 <= r <= b for a, b in farm.kill_windows)]
        checker.check_refusals_logged(len(seen), refused_logged, t)
        for node in nodes:
            # fds flat: idle, then 60 more connections (no cookie: no session on the hosts), idle again
            # (two rounds: the first may open what a process keeps, a Redis connection pool say)
            first_round = await farm.quiet_fds(node)
            probed = await farm.probe_connections(node, 60)
            await farm.wait_idle(node, 20)
            before_probe = await farm.quiet_fds(node)
            probed += await farm.probe_connections(node, 60)
            await farm.wait_idle(node, 20)
            after_probe = await farm.quiet_fds(node)
            checker.check_idle(f"node {node.name}: fds of its processes after 60 more connections, above "
                               "before them (+3)", after_probe, before_probe + 3, farm.now())
            files_end = await farm.quiet_file_fds(node)
            now_targets = Counter(node.file_fd_targets())
            grown = now_targets - file_targets_start[node.name]
            gone = file_targets_start[node.name] - now_targets
            checker.check_idle(f"node {node.name}: fds of its primary that are not sockets, above its first "
                               f"process's at start ({files_start[node.name]}, +2; more now: {dict(grown)}, "
                               f"fewer: {dict(gone)})",
                               files_end, files_start[node.name] + 2, farm.now())
            checker.check_idle(f"node {node.name}: pipes whose both ends its primary holds (the splice pool, "
                               f"at most {PIPE_POOL_MAX}, and the loop's own)", node.pipe_pairs(),
                               PIPE_POOL_MAX + 4, farm.now())
            first, first_primary = fds_start[node.name]
            idle[node.name].update(fds_idle_at_end=first_round, fds_before_probe=before_probe,
                                   fds_after_probe=after_probe,
                                   probes_landed=probed, first_primary_fds_at_start=first.get(first_primary or -1),
                                   primary_fds_at_end=fds_end[node.name].get(node.primary or -1),
                                   rss_kb_end=node.rss_kb(), file_fds_start=files_start[node.name],
                                   file_fds_end=files_end, pipe_pairs_end=node.pipe_pairs())
        report = {
            "command": f"python3 -m tests.farm.sim --minutes {p.minutes:g} --seed {p.seed} --users {p.users} "
                       f"--hosts {p.hosts} --scale {p.scale:g} --nodes {p.nodes}"
                       + (f" --weights {','.join(f'{k}={v:g}' for k, v in p.weights.items())}" if p.weights else "")
                       + (" --sentinel" if p.sentinel else "")
                       + (f" --sabotage {p.sabotage:g}" if p.sabotage else ""),
            "seed": p.seed, "wall_s": round(time.time() - started, 1), "day_s": p.day_s, "scale": p.scale,
            **checker.summary(), "chaos": dict(sorted(farm.chaos.items())),
            "outcomes": dict(sorted(farm.outcomes.items())), "explain_before_reconnect": dict(farm.explained),
            "idle": idle,
            "pushes": {h.name: h.pushes for h in hosts.values()},
            "push_failures": {h.name: h.push_failures for h in hosts.values()},
            "refused_seen_outside_kills": len(seen), "refused_logged": refused_logged,
            "routed_lines": sum(1 for r in routed if r.get("reason") != "rejected"),
        }
    finally:
        farm.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(farm.open):
            farm.close(conn)
        for node in nodes:
            await node.stop()
        if redis is not None:
            if redis.proc is not None:
                redis.proc.send_signal(signal.SIGCONT)
            redis.close()
        if sentinel is not None:
            sentinel.close()
        for h in hosts.values():
            await h.stop_all()
        checker.dump(str(p.out / "trace.jsonl"))
    lines = balancer_lines([node.log for node in nodes])
    report["violation_details"] = [
        {"invariant": v.invariant, "t": round(v.t, 3), "user": v.user, "what": v.what,
         "balancer": balancer_line(checker, v, lines), "trace": checker.trace_of(v.user)}
        for v in checker.violations[:20]]
    (p.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


CLIENT = re.compile(r" (?:routed|rejected) client=(\S+) ")


def balancer_lines(logs: list[Path]) -> dict[str, str]:
    """client address:port -> the balancer's routed or rejected line for that connection."""
    out = {}
    for path in logs:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                m = CLIENT.search(line)
                if m is not None:
                    out[m.group(1)] = line
    return out


def balancer_line(checker: Checker, v: Any, lines: dict[str, str]) -> str | None:
    """The balancer's own line for the connection a violation is about (the last one of her
    connections with a client address, at or before it)."""
    if v.user is None:
        return None
    for e in reversed(checker.events):
        if e.t <= v.t and e.fields.get("user") == v.user and e.fields.get("client") and e.kind != "connect":
            return lines.get(str(e.fields["client"]))
    return None


def read_log(path: Path) -> tuple[list[dict[str, str]], int]:
    """The `routed` lines (fields) and the `rejected` ones (reason "rejected", the text as
    "detail"), and the number of refusals the log names with a reason (rejected lines, refused
    lines and the refusals they say were left out)."""
    routed, refused = [], 0
    for line in path.read_text(errors="replace").splitlines():
        m = ROUTED.search(line)
        if m is not None:
            routed.append({k: v.strip('"') for k, v in FIELD.findall(m.group(1))})
        elif (rejected := REJECTED.search(line)) is not None:
            refused += 1
            # a refused connection decided too: a session rule may have corrected her entry
            routed.append({"client": rejected.group(1), "reason": "rejected", "detail": rejected.group(2)})
        elif " refused client=" in line and " reason=" in line:
            more = MORE.search(line)
            refused += 1 + (int(more.group(1)) if more else 0)
    return routed, refused


def describe(report: dict[str, Any]) -> str:
    lines = [f"farm simulator: seed {report.get('seed')} ({report.get('command')})",
             f"  wall {report.get('wall_s')} s; events by kind: {report.get('events')}",
             f"  chaos: {report.get('chaos')}", f"  client outcomes: {report.get('outcomes')}",
             f"  invariant checks: {report.get('checks')}; moves seen: {report.get('moves')}",
             f"  excused (down past failover_after, maintenance, Redis away): {report.get('excused')}",
             f"  explain before a reconnect: {report.get('explain_before_reconnect')}",
             f"  idle: {report.get('idle')}",
             f"  violations: {dict(report.get('violations') or {}) or 'none'}"]
    for v in report.get("violation_details", []):
        lines.append(f"  VIOLATION {v['invariant']} at {v['t']} user {v['user']}: {v['what']}")
        if v.get("balancer"):
            lines.append(f"    the balancer: {v['balancer']}")
        lines += ["      " + row for row in v["trace"][-25:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=1, choices=[1, 2], help="2: two nodes sharing a Redis table")
    ap.add_argument("--sentinel", action="store_true",
                    help="with --nodes 2: Redis as a master, a replica and three sentinels; the chaos kills the master")
    ap.add_argument("--no-faketime", action="store_true")
    ap.add_argument("--chaos-every", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sabotage", type=float, default=0.0,
                    help="the checker's own test: this share of reconnects bypasses the balancer, and of "
                         "sticky checks deletes the entry first (violations must be reported)")
    ap.add_argument("--weights", default="", help="chaos weights over the defaults: kind=w,kind=w "
                    f"(kinds: {', '.join(CHAOS_WEIGHTS)})")
    a = ap.parse_args(argv)
    weights = {k: float(v) for k, v in (kv.split("=") for kv in a.weights.split(",") if kv)}
    unknown = set(weights) - set(CHAOS_WEIGHTS)
    if unknown:
        ap.error(f"unknown chaos kind(s): {', '.join(sorted(unknown))}")
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    out = a.out or Path(f"/tmp/farm-sim-{seed}")
    print(f"farm simulator: seed {seed}, {a.minutes:g} min, out {out}", flush=True)
    p = Params(seed=seed, minutes=a.minutes, users=a.users, hosts=a.hosts, scale=a.scale, workers=a.workers,
               faketime=not a.no_faketime, chaos_every_s=a.chaos_every, weights=weights, nodes=a.nodes,
               sentinel=a.sentinel, sabotage=a.sabotage, out=out)
    if p.sentinel and p.nodes < 2:
        ap.error("--sentinel needs --nodes 2")
    report = asyncio.run(run(p))
    print(describe(report), flush=True)
    return 1 if report.get("violations") else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
