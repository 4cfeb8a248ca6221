"""`[balancer] workers = 2`: a real worker process beside the in-process primary.

Connections are spread by the kernel (SO_REUSEPORT) over the primary's and the worker's
listening sockets; routing, the sticky table and the counts live in the primary only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import struct
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from rdpbalancer.workers.primary import RemoteSession
from tests.support.balancer import farm_config, process_gone, running, wait_until
from tests.support.fakes import FakeRdpServer, RdpClient, rdp_connect, start_farm, where

WAIT_S = 15.0


def two_workers(farm: list[FakeRdpServer], path: Path, extra: str = "") -> str:
    return farm_config([(s.name, s.address, 1) for s in farm], path, balancer_extra=f"workers = 2\n{extra}")


def by_process(bal) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Live sessions by the process relaying them: "primary" or "worker"."""
    return Counter("worker" if isinstance(s, RemoteSession) else "primary"
                   for s in bal.ctx.sessions.values() if s.relaying)


async def close_all(clients: list[RdpClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def test_a_burst_of_one_new_user_through_both_workers_gets_one_server(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(two_workers(farm, tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        clients = await asyncio.gather(*(rdp_connect(port, "alice") for _ in range(120)))
        servers = {c.server for c in clients}
        assert len(servers) == 1, f"alice was sent to {servers}"
        (home,) = servers
        await wait_until(lambda: sum(by_process(bal).values()) == 120, WAIT_S)
        spread = by_process(bal)
        assert spread["primary"] > 0 and spread["worker"] > 0, f"the kernel did not use both processes: {spread}"
        # leastconn's view: every process's sessions are counted in the one router
        assert bal.router.connections[home] == 120
        entry = bal.table.get("alice", bal.ctx.clock())
        assert entry is not None and entry.server == home
        await close_all(clients)
        await wait_until(lambda: not bal.router.connections, WAIT_S)
    rows = sqlite3.connect(tmp_path / "s.db").execute("SELECT key, server FROM sticky").fetchall()
    assert rows == [("alice", home)]
    for s in farm:
        await s.stop()


async def test_leastconn_and_drain_see_every_workers_sessions(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(two_workers(farm, tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        clients = await asyncio.gather(*(rdp_connect(port, f"user{i:02d}") for i in range(60)))
        assert Counter(c.server for c in clients) == {"TS01": 20, "TS02": 20, "TS03": 20}
        await wait_until(lambda: sum(by_process(bal).values()) == 60, WAIT_S)
        assert min(by_process(bal).values()) > 0
        # the API lists the worker's sessions too, with their live byte counts (reported each second)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{bal.admin.port}/api/v1/sessions") as resp:
                sessions = (await resp.json())["sessions"]
            async with http.get(f"http://127.0.0.1:{bal.admin.port}/api/v1/workers") as resp:
                workers = (await resp.json())["workers"]
        assert len(sessions) == 60 and {s["worker"] for s in sessions} == {0, 1}
        assert [w["role"] for w in workers] == ["primary", "worker"] and workers[1]["alive"]
        bal.ops.set_admin_state("TS01", "drain")
        more = await asyncio.gather(*(rdp_connect(port, f"new{i:02d}") for i in range(40)))
        assert "TS01" not in {c.server for c in more}
        await close_all(clients + more)
    for s in farm:
        await s.stop()


async def test_a_killed_worker_leaves_the_counts_and_is_restarted(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02")
    async with running(two_workers(farm, tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        assert bal.workers is not None
        link = bal.workers.links[0]
        pid = link.pid
        assert pid is not None
        clients = await asyncio.gather(*(rdp_connect(port, f"u{i}") for i in range(40)))
        await wait_until(lambda: sum(by_process(bal).values()) == 40, WAIT_S)
        on_worker = by_process(bal)["worker"]
        assert on_worker > 0
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: sum(bal.router.connections.values()) == 40 - on_worker, WAIT_S)
        await wait_until(lambda: link.alive and link.ready.is_set() and link.pid != pid, WAIT_S)
        assert link.restarts == 1
        # the users stay sticky; the restarted worker serves again
        users = [f"u{i}" for i in range(40)]
        homes = {u: c.server for u, c in zip(users, clients, strict=True)}
        again = await asyncio.gather(*(rdp_connect(port, u) for u in users))
        assert {u: c.server for u, c in zip(users, again, strict=True)} == homes
        await wait_until(lambda: by_process(bal)["worker"] > 0, WAIT_S)
        await close_all(clients + again)
    for s in farm:
        await s.stop()


async def test_reload_reaches_the_workers_and_stop_ends_them(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    config = tmp_path / "rdpb.toml"
    config.write_text(two_workers(farm, tmp_path / "s.db"))
    from rdpbalancer.app import Balancer  # noqa: PLC0415
    from rdpbalancer.config import load_config  # noqa: PLC0415

    bal = Balancer(load_config(config))
    await bal.start()
    try:
        assert bal.workers is not None
        process = bal.workers.links[0].process
        first_port = bal.addresses[0][1]
        config.write_text(two_workers(farm, tmp_path / "s.db").replace(
            'listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{first_port}", "127.0.0.2:0"]'))
        assert await bal.reloader.reload() is None
        second = bal.addresses[1]
        assert second[0] == "127.0.0.2"
        clients = await asyncio.gather(*(rdp_connect(second[1], f"r{i}", host="127.0.0.2") for i in range(40)))
        await wait_until(lambda: sum(by_process(bal).values()) == 40, WAIT_S)
        assert by_process(bal)["worker"] > 0, "the worker did not open the new listener"
        await close_all(clients)
        # a change of the worker count needs a restart, and says so
        config.write_text(config.read_text().replace("workers = 2", "workers = 3"))
        error = await bal.reloader.reload()
        assert error is not None and "balancer.workers changed" in error
        assert await where(first_port, "alice") == "TS01"
    finally:
        await bal.stop()
        await farm[0].stop()
    assert process is not None and process.returncode is not None


def test_worker_count_is_validated(tmp_path: Path) -> None:
    from rdpbalancer.config import ConfigError, parse_config  # noqa: PLC0415

    for bad in ("0", '"many"', "65", "1.5"):
        with pytest.raises(ConfigError, match=r"balancer\.workers"):
            parse_config(farm_config([("a", "127.0.0.1:1", 1)], tmp_path / "s.db", balancer_extra=f"workers = {bad}"))
    auto = parse_config(farm_config([("a", "127.0.0.1:1", 1)], tmp_path / "s.db", balancer_extra='workers = "auto"'))
    from rdpbalancer.config.compile import compile_config, usable_cores  # noqa: PLC0415

    assert compile_config(auto).workers == usable_cores() >= 1


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]




async def test_workers_exit_when_the_primary_is_killed(tmp_path: Path) -> None:
    from tests.support.balancer import BalancerProcess  # noqa: PLC0415

    farm = await start_farm("TS01")
    config = tmp_path / "rdpb.toml"
    config.write_text(two_workers(farm, tmp_path / "s.db"))  # on port 0: the port is read from its log
    proc = BalancerProcess(config, 0, tmp_path / "rdpb.log")
    proc.start()
    port = proc.port
    try:
        assert proc.proc is not None
        primary = proc.proc.pid
        await wait_until(lambda: len(_children(primary)) == 1, WAIT_S)
        (worker,) = _children(primary)
        client = await rdp_connect(port, "alice")
        proc.proc.kill()
        proc.proc.wait()
        await wait_until(lambda: process_gone(worker), WAIT_S)
        await client.close()
    finally:
        proc.stop()
        await farm[0].stop()


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_server_that_resets_at_once_leaves_no_count_behind(tmp_path: Path, workers: int) -> None:
    """The server accepts, then resets (RST) before the Connection Request reaches it: whichever
    process relayed the attempt, the server's connection count and the user's entry go back."""

    def reset_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset_at_once, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    cfg = farm_config([("RST", address, 1)], tmp_path / "s.db", balancer_extra=f'workers = {workers}\nrelay = "splice"')
    async with running(cfg) as bal:
        port = bal.addresses[0][1]
        for i in range(20):
            with pytest.raises((OSError, asyncio.IncompleteReadError)):
                await rdp_connect(port, f"u{i}")
        await wait_until(lambda: not bal.ctx.sessions and not bal.router.connections, WAIT_S)
        assert all(e.active == 0 for e in bal.table)
        if bal.workers is not None:
            assert not bal.workers.links[0].attempts
    server.close()
    await server.wait_closed()


async def test_the_per_user_limit_is_one_count_across_workers(tmp_path: Path) -> None:
    """Connections of one user spread by the kernel over both processes are counted in the
    primary: exactly `per_user_connections` get through, wherever they arrived."""
    farm = await start_farm("TS01", "TS02")
    text = two_workers(farm, tmp_path / "s.db").replace("[limits]\n", "[limits]\nper_user_connections = 5\n")

    async def attempt() -> RdpClient | None:
        try:
            return await rdp_connect(port, "loop")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None  # refused: closed after the Connection Request

    async with running(text) as bal:
        port = bal.addresses[0][1]
        results = await asyncio.gather(*(attempt() for _ in range(40)))
        through = [c for c in results if c is not None]
        assert len(through) == 5
        await wait_until(lambda: sum(by_process(bal).values()) == 5, WAIT_S)
        await wait_until(lambda: bal.view.stats().refused["per-user"] == 35, WAIT_S)  # the worker's reports too
        assert bal.router.user_connections["loop"] == 5
        assert await where(port, "alice") in ("TS01", "TS02")  # another user: untouched
        await close_all(through)
        await wait_until(lambda: not bal.router.user_connections, WAIT_S)
    for s in farm:
        await s.stop()
