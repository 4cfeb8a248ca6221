"""kill -9 during a logon storm: the scenario shared by the durability test and benchmark."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.balancer import BalancerProcess, farm_config
from tests.support.fakes import FakeRdpServer, rdp_connect, start_farm, where

BURST_USERS = 400
CONCURRENCY = 32
KILL_AFTER_CRS = 150  # kill once this many Connection Requests reached the servers


def assignments(farm: list[FakeRdpServer]) -> dict[str, str]:
    """user -> server, as the servers saw it: what clients have acted on."""
    seen: dict[str, str] = {}
    for server in farm:
        for cookie in server.cookies:
            assert cookie is not None
            user = cookie.decode()
            assert seen.setdefault(user, server.name) == server.name, f"{user} reached two servers"
    return seen


async def burst(port: int, users: list[str]) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(user: str) -> None:
        async with sem:
            try:
                client = await rdp_connect(port, user)
                await client.close()
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass  # the balancer died under us: expected for some

    await asyncio.gather(*(one(u) for u in users))


async def kill_during_storm(workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(user -> server before the SIGKILL, user -> server after the restart) for every user that
    reached a server before the kill."""
    farm = await start_farm("TS01", "TS02", "TS03")
    cfg = workdir / "rdpb.toml"
    text = farm_config([(s.name, s.address, 1) for s in farm], workdir / "sticky.db")
    cfg.write_text(text.replace('sync = "normal"', 'sync = "full"'))
    proc = BalancerProcess(cfg, 0, workdir / "balancer.log")  # the port each start took, from its log
    try:
        await asyncio.to_thread(proc.start)
        storm = asyncio.create_task(burst(proc.port, [f"storm{i:04d}" for i in range(BURST_USERS)]))
        while sum(len(s.cookies) for s in farm) < KILL_AFTER_CRS:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(proc.signal, signal.SIGKILL)
        await storm
        before = assignments(farm)
        await asyncio.to_thread(proc.start)
        return before, {u: await where(proc.port, u) for u in before}
    finally:
        proc.stop()
        for s in farm:
            await s.stop()
