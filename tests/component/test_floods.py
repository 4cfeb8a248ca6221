"""Floods against a real balancer process, from several loopback addresses: silent and
byte-a-time clients, invented user names, and a mix of good, junk, reset and silent clients.
Bounded in count and time; numbers are printed for the closing notes (pytest -s)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.support import flood
from tests.support.balancer import BalancerProcess, farm_config, wait_until
from tests.support.fakes import FakeRdpServer, start_farm, where

ATTACKERS = [f"127.0.0.{i}" for i in range(2, 7)]
REAL = "127.0.0.9"


@asynccontextmanager
async def balancer(tmp_path: Path, farm: list[FakeRdpServer], limits: str, handshake: str,
                   sticky: str = "") -> AsyncIterator[tuple[BalancerProcess, Path]]:
    """The balancer on port 0, and its admin API's Unix socket: at "warning" it logs no start-up
    line, so the port it took is read from the admin API over that socket (a path chosen here)."""
    admin = tmp_path / "admin.sock"
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", limits=limits,
                       extra=f'unix_socket = "{admin}"\n')
    text = text.replace('handshake_timeout = "1s"', f'handshake_timeout = "{handshake}"')
    text = text.replace('sync = "normal"\n', f'sync = "normal"\n{sticky}\n') + '\n[log]\nlevel = "warning"\n'
    (tmp_path / "rdpb.toml").write_text(text)
    proc = BalancerProcess(tmp_path / "rdpb.toml", 0, tmp_path / "rdpb.log", admin_socket=admin)
    await asyncio.to_thread(proc.start)
    try:
        yield proc, admin
    finally:
        proc.stop()


def admin_api(admin: Path) -> aiohttp.ClientSession:
    """A client of the admin API on its Unix socket `admin`: URLs http://localhost/..."""
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(admin)))


async def metric(admin: Path, name: str) -> float:
    async with admin_api(admin) as http, http.get("http://localhost/metrics") as resp:
        text = await resp.text()
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return sum(float(v) for v in found)


async def settle(admin: Path, timeout_s: float = 20.0) -> None:
    """Until no session and no handshake is left in the balancer."""
    deadline = time.monotonic() + timeout_s
    while (await metric(admin, "rdpbalancer_sessions_active")
           + await metric(admin, "rdpbalancer_handshakes_pending")) > 0:
        assert time.monotonic() < deadline, "sessions left open"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_5000_silent_and_200_byte_a_time_clients_are_closed_at_the_deadline_while_real_users_log_on(
        tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    limits = ("max_handshakes = 10000\nmax_connections = 20000\nper_source_connections = 2000\n"
              "per_source_rate = 100000\nper_source_burst = 100000\nnew_users_per_source = 100000")
    deadline_s = 5.0
    async with balancer(tmp_path, farm, limits, f"{deadline_s:g}s") as (proc, admin):
        assert proc.proc is not None
        pid, address = proc.proc.pid, ("127.0.0.1", proc.port)
        for i in range(20):  # warm up: code paths, buffers
            await where(proc.port, f"warm{i}", local_host=REAL)
        await settle(admin)
        async with flood.Peak(pid) as peak:
            started = time.monotonic()
            silent = []
            for n, source in enumerate(itertools.islice(itertools.cycle(ATTACKERS), 5000)):
                silent.append(asyncio.ensure_future(flood.silent(address, source, deadline_s + 10)))
                if n % 250 == 249:
                    await asyncio.sleep(0.05)  # within the listen backlog
            slow = [asyncio.ensure_future(flood.trickle(address, "127.0.0.7", 0.25, deadline_s + 10))
                    for _ in range(200)]
            real = await flood.bounded((lambda i=i: flood.logon(address, REAL, f"user{i}") for i in range(200)),
                                       concurrency=10, deadline_s=60)
            silent_s = await asyncio.gather(*silent)
            slow_s = await asyncio.gather(*slow)
        took = time.monotonic() - started
        await settle(admin)
        per_conn = (peak.rss - peak.base_rss) * 1024 / 5200
        print(f"\nsilent 5000 + byte-a-time 200: closed after {min(silent_s):.2f}..{max(silent_s):.2f} s "
              f"(byte-a-time {min(slow_s):.2f}..{max(slow_s):.2f} s); real logons {dict(real)}; "
              f"RSS {peak.base_rss} -> peak {peak.rss} KiB ({per_conn:.0f} B per held connection); "
              f"fds {peak.base_fds} -> peak {peak.fds}; {took:.1f} s in all")
        assert real == {"ok": 200}
        assert max(silent_s) <= deadline_s + 2.0 and min(silent_s) >= deadline_s - 0.5
        assert max(slow_s) <= deadline_s + 2.0  # a byte every 0.25 s never finishes a CR in time
        assert peak.fds >= peak.base_fds + 4000, "the flood was not held at once"
        assert per_conn <= 8 * 1024, "more than 8 KiB per silent connection"
        assert await metric(admin, "rdpbalancer_connections_total") >= 5200
        assert flood.open_fds(pid) <= peak.base_fds + 5
    for s in farm:
        await s.stop()


@pytest.mark.timeout(400)
async def test_100000_invented_users_from_a_few_addresses_do_not_push_out_real_users(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    limits = ("per_source_connections = 5000\nper_source_rate = 1000000\nper_source_burst = 100000\n"
              "new_users_per_source = 200\nmax_handshakes = 10000")
    async with balancer(tmp_path, farm, limits, "2s", sticky="max_entries = 3000") as (proc, admin):
        assert proc.proc is not None
        pid, address = proc.proc.pid, ("127.0.0.1", proc.port)
        real = {f"real{i}": await where(proc.port, f"real{i}", local_host=REAL) for i in range(50)}
        started = time.monotonic()
        names = (f"x{random.getrandbits(40):010x}" for _ in range(100_000))
        sources = itertools.cycle(ATTACKERS[:4])
        jobs = (lambda n=n, s=s: flood.logon(address, s, n) for n, s in zip(names, sources, strict=False))
        async with flood.Peak(pid) as peak:
            results = await flood.bounded(jobs, concurrency=200, deadline_s=300)
        took = time.monotonic() - started
        await settle(admin)
        async with admin_api(admin) as http, http.get("http://localhost/api/v1/sticky?limit=1") as resp:
            entries = (await resp.json())["total"]
        refused = await metric(admin, 'rdpbalancer_connections_refused_total')
        print(f"\n100,000 invented users from 4 addresses in {took:.1f} s ({100_000 / took:.0f}/s): {dict(results)}; "
              f"table {entries} entries (max 3000); refused {refused:.0f}; RSS {peak.base_rss} -> peak {peak.rss} KiB")
        assert sum(results.values()) == 100_000
        assert set(results) <= {"ok", "refused"}, results
        assert results["refused"] >= 95_000
        assert entries <= 50 + 4 * 200 * (1 + took / 60) + 1
        for user, home in real.items():  # every real user still goes home
            assert await where(proc.port, user, local_host=REAL) == home
    for s in farm:
        await s.stop()


@pytest.mark.timeout(400)
async def test_100000_mixed_connections_leave_no_descriptor_or_task_behind(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    limits = ("per_source_connections = 5000\nper_source_rate = 1000000\nper_source_burst = 100000\n"
              "new_users_per_source = 1000000\nmax_handshakes = 10000")
    async with balancer(tmp_path, farm, limits, "1s") as (proc, admin):
        assert proc.proc is not None
        pid, address = proc.proc.pid, ("127.0.0.1", proc.port)
        for i in range(20):
            await where(proc.port, f"warm{i}", local_host=REAL)
        await settle(admin)
        base_fds, base_tasks = flood.open_fds(pid), await metric(admin, "rdpbalancer_event_loop_tasks")
        rng = random.Random(8)
        sources = itertools.cycle(ATTACKERS)

        def job(i: int):  # type: ignore[no-untyped-def]
            roll, source = rng.random(), next(sources)
            if roll < 0.70:
                return lambda: flood.logon(address, source, f"user{i % 2000}")
            if roll < 0.85:
                return lambda: flood.junk(address, source, rng)
            if roll < 0.99:
                return lambda: flood.reset(address, source, f"user{i % 2000}")
            return lambda: flood.silent(address, source, 10)

        started = time.monotonic()
        async with flood.Peak(pid) as peak:
            results = await flood.bounded((job(i) for i in range(100_000)), concurrency=200, deadline_s=330)
        took = time.monotonic() - started
        await settle(admin)
        with contextlib.suppress(TimeoutError):  # sockets of ended sessions close just after they count as ended
            await wait_until(lambda: flood.open_fds(pid) <= base_fds, timeout_s=5.0, interval_s=0.05)
        fds, tasks = flood.open_fds(pid), await metric(admin, "rdpbalancer_event_loop_tasks")
        print(f"\n100,000 mixed in {took:.1f} s: {dict(results)}; fds {base_fds} -> {fds}; "
              f"tasks {base_tasks:.0f} -> {tasks:.0f}; RSS {peak.base_rss} -> peak {peak.rss} KiB, fds peak {peak.fds}")
        assert sum(results.values()) == 100_000
        assert set(results) <= {"ok", "closed", "reset", "done"}, results
        assert fds <= base_fds + 2
        assert tasks <= base_tasks + 1
        assert await where(proc.port, "after", local_host=REAL) in {"TS01", "TS02", "TS03"}
    for s in farm:
        await s.stop()
