"""kill -9 a real balancer in the middle of a burst of 10,000 new users.

The balancer commits a new user's assignment before it forwards the Connection Request, so every
user whose request reached a server (the fake servers record each one with its mstshash cookie)
must be in the table of the restarted balancer, at that server. `sync = "full"`, the default.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.balancer import BalancerProcess, farm_config, stored
from tests.support.fakes import FakeRdpServer, rdp_connect, start_farm, where
from tests.support.storm import assignments

BURST_USERS = 10_000
CONCURRENCY = 64  # clients connecting at once
KILL_BETWEEN_CRS = (3_000, 5_000)  # the kill lands once a random count in this range reached servers
BURST_TIMEOUT_S = 40.0  # the whole burst, kill included: the test stays under a minute on 2 cores
WATCH_INTERVAL_S = 0.002  # how often the killer counts the requests the servers saw
SPOT_CHECK_USERS = 20  # routed again after the restart, on top of reading the whole table
API_PAGE = 1000  # the admin API's largest page (MAX_PAGE)


class Burst:
    """CONCURRENCY clients work through the user list; they stop starting users once `stop` is set."""

    def __init__(self, port: int, users: list[str]) -> None:
        self.port, self.users = port, iter(users)
        self.stop = asyncio.Event()
        self.connected = self.failed = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(CONCURRENCY)))

    async def _client(self) -> None:
        for user in self.users:  # shared iterator: each user once, the loop ends with the list
            if self.stop.is_set():
                return
            try:
                client = await rdp_connect(self.port, user)
                await client.close()
                self.connected += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                self.failed += 1  # the balancer died under this one


async def kill_when(proc: BalancerProcess, farm: list[FakeRdpServer], threshold: int, burst: Burst) -> int:
    """SIGKILL once `threshold` requests reached the servers; returns the count at the kill."""
    while (seen := sum(len(s.cookies) for s in farm)) < threshold:
        await asyncio.sleep(WATCH_INTERVAL_S)
    await asyncio.to_thread(proc.signal, signal.SIGKILL)
    burst.stop.set()
    return seen


async def sticky_table(admin_port: int) -> dict[str, str]:
    """user -> server, the restarted balancer's whole table, page by page."""
    table: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for offset in range(0, BURST_USERS + API_PAGE, API_PAGE):  # bounded: the table cannot be larger
            url = f"http://127.0.0.1:{admin_port}/api/v1/sticky?limit={API_PAGE}&offset={offset}"
            async with http.get(url) as resp:
                page = await resp.json()
            table.update((e["user"], e["server"]) for e in page["entries"])
            if offset + API_PAGE >= page["total"]:
                return table
    raise AssertionError("the sticky table has more entries than users")




@pytest.mark.slow
async def test_kill_9_mid_burst_of_10000_users_loses_no_assignment(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    threshold = rng.randint(*KILL_BETWEEN_CRS)
    farm = await start_farm("TS01", "TS02", "TS03")
    db = tmp_path / "sticky.db"
    text = farm_config([(s.name, s.address, 1) for s in farm], db)
    text = text.replace('sync = "normal"\n', "")  # the default: full
    cfg = tmp_path / "rdpb.toml"
    cfg.write_text(text)
    proc = BalancerProcess(cfg, 0, tmp_path / "balancer.log")  # on port 0: each start's ports from its log
    try:
        await asyncio.to_thread(proc.start)
        burst = Burst(proc.port, [f"burst{i:05d}" for i in range(BURST_USERS)])
        started = time.monotonic()
        async with asyncio.timeout(BURST_TIMEOUT_S):
            at_kill, _ = await asyncio.gather(kill_when(proc, farm, threshold, burst), burst.run())
        burst_s = time.monotonic() - started
        before = assignments(farm)  # every request that reached a server, the in-flight ones too
        started = time.monotonic()
        await asyncio.to_thread(proc.start)
        restart_s = time.monotonic() - started
        assert proc.admin_port is not None  # the restart's: its API listens before its start-up line
        after = await sticky_table(proc.admin_port)
        context = (f"seed={seed} kill at {at_kill} CRs, {len(before)} reached servers in all, "
                   f"{burst.connected} clients connected, {burst.failed} failed, burst {burst_s:.1f}s")
        assert threshold <= len(before) < BURST_USERS, f"the kill did not land mid-burst: {context}"
        lost = {u: (s, after.get(u)) for u, s in before.items() if after.get(u) != s}
        assert not lost, f"{len(lost)} users lost or moved by kill -9 ({context}): {list(lost.items())[:5]}"
        assert stored(db) == after, "the restarted table and the file differ"
        sample = rng.sample(sorted(before), SPOT_CHECK_USERS)
        assert {u: await where(proc.port, u) for u in sample} == {u: before[u] for u in sample}
        print(f"\n{context}; {len(after)} in the restarted table (restart {restart_s:.1f}s)")
    finally:
        proc.stop()
        for s in farm:
            await s.stop()
