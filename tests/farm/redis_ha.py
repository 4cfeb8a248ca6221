"""Redis as the pair runs it (`--sentinel`): a master, a replica and three sentinels (quorum 2)
on loopback, real processes stopped by PID. The chaos kills the master (-9, its data gone with
it: no persistence), Sentinel promotes the replica, and the killed server comes back as a replica
of the new master, ready for the next failover."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, Sentinel

SERVICE = "rdpb"
FAILOVER_TIMEOUT_S = 30.0


def _ask(port: int, command: str, *args: str) -> object:
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return client.execute_command(command, *args)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
        return None
    finally:
        client.close()


class SentinelRedis:
    def __init__(self, workdir: Path) -> None:
        self.a = RedisServer(workdir / "redis-a")
        self.b = RedisServer(workdir / "redis-b", extra=("--replicaof", "127.0.0.1", str(self.a.port)))
        self.sentinels = [Sentinel(workdir / f"sentinel-{i}", self.a, name=SERVICE, quorum=2) for i in range(3)]
        self.failovers = 0

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(s.address for s in self.sentinels)

    def start(self) -> None:
        self.a.start()
        self.b.start()
        for s in self.sentinels:
            s.start()

    def master_port(self) -> int | None:
        """The master as the first sentinel that answers names it."""
        for s in self.sentinels:
            answer = _ask(s.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
            if isinstance(answer, list) and len(answer) == 2:
                return int(answer[1])
        return None

    def _server(self, port: int | None) -> RedisServer | None:
        return next((r for r in (self.a, self.b) if r.port == port), None)

    async def replica_known(self, timeout_s: float = 30.0) -> bool:
        """Until the sentinels list a replica that is up (they learn it from the master's INFO,
        every 10 s): with none, a failover would find nothing to promote."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = await asyncio.to_thread(_ask, self.sentinels[0].port, "SENTINEL", "replicas", SERVICE)
            for row in answer if isinstance(answer, list) else ():
                fields = dict(zip(row[::2], row[1::2], strict=False))
                flags = fields.get(b"flags", b"")
                if b"s_down" not in flags and b"disconnected" not in flags:
                    return True
            await asyncio.sleep(0.5)
        return False

    async def kill_master(self) -> tuple[int | None, int | None, float]:
        """Kill -9 the master; wait until the sentinels name the other server; bring the killed
        one back as its replica. (old port, new port or None, seconds until promoted)"""
        old_port = await asyncio.to_thread(self.master_port)
        old = self._server(old_port)
        if old is None or old.proc is None:
            return old_port, None, 0.0
        start = time.monotonic()
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait()
        old.proc = None
        new_port = None
        while time.monotonic() - start < FAILOVER_TIMEOUT_S:
            port = await asyncio.to_thread(self.master_port)
            if port is not None and port != old_port:
                new_port = port
                break
            await asyncio.sleep(0.2)
        took = time.monotonic() - start
        if new_port is not None:
            self.failovers += 1
            old.extra = ("--replicaof", "127.0.0.1", str(new_port))
        await asyncio.to_thread(old.start)  # (without a new master: as it was, and Sentinel decides)
        return old_port, new_port, took

    def outage_target(self) -> RedisServer | None:
        return self._server(self.master_port())

    def close(self) -> None:
        for s in self.sentinels:
            s.stop()
        for r in (self.a, self.b):
            if r.proc is not None:
                r.proc.send_signal(signal.SIGCONT)
            r.close()
