"""Sticky assignments survive the balancer being killed with SIGKILL or stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.support.balancer import BalancerProcess, farm_config, free_port
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


@pytest.mark.slow
async def test_kill_9_during_a_burst_loses_no_assignment(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    port = free_port()
    cfg = tmp_path / "rdpb.toml"
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "sticky.db", listen=f"127.0.0.1:{port}")
    cfg.write_text(text.replace('sync = "normal"', 'sync = "full"'))
    proc = BalancerProcess(cfg, port, tmp_path / "balancer.log")
    await asyncio.to_thread(proc.start)
    try:
        users = [f"storm{i:04d}" for i in range(BURST_USERS)]
        storm = asyncio.create_task(burst(port, users))
        while sum(len(s.cookies) for s in farm) < KILL_AFTER_CRS:
            await asyncio.sleep(0.005)
        assert proc.proc is not None
        await asyncio.to_thread(proc.signal, signal.SIGKILL)
        await storm
        before = assignments(farm)
        assert KILL_AFTER_CRS <= len(before) < BURST_USERS, "the kill did not land mid-burst"

        await asyncio.to_thread(proc.start)
        for s in farm:
            s.cookies.clear()
        after = {u: await where(port, u) for u in before}
        lost = {u: (before[u], after[u]) for u in before if after[u] != before[u]}
        assert not lost, f"{len(lost)} of {len(before)} users moved after kill -9: {list(lost.items())[:5]}"
    finally:
        proc.stop()
        for s in farm:
            await s.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_restart_keeps_users_and_open_sessions_count(tmp_path: Path, sig: signal.Signals) -> None:
    farm = await start_farm("TS01", "TS02")
    port = free_port()
    cfg = tmp_path / "rdpb.toml"
    cfg.write_text(farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "sticky.db",
                               listen=f"127.0.0.1:{port}"))
    proc = BalancerProcess(cfg, port, tmp_path / "balancer.log")
    await asyncio.to_thread(proc.start)
    try:
        held = await rdp_connect(port, "alice")  # alice stays connected across the restart
        bob = await where(port, "bob")
        code = await asyncio.to_thread(proc.signal, sig)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        await held.close()
        await asyncio.to_thread(proc.start)
        assert await where(port, "alice") == held.server
        assert await where(port, "bob") == bob
    finally:
        proc.stop()
        for s in farm:
            await s.stop()
    if sig == signal.SIGTERM:
        log = (tmp_path / "balancer.log").read_text()
        assert "SIGTERM received" in log and "stopped" in log
