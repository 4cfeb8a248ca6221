"""Hot reload: the new file is swapped in whole or not at all; live sessions never notice."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import load_config
from rdpbalancer.policy.model import AdminState
from tests.support.balancer import BalancerProcess, farm_config, wait_serving, wait_until
from tests.support.fakes import rdp_connect, start_farm, where


async def test_reload_under_live_traffic_keeps_sessions_and_table(tmp_path: Path) -> None:
    farm = await start_farm("A", "B", "C")
    path = tmp_path / "c.toml"
    path.write_text(farm_config([("A", farm[0].address, 1), ("B", farm[1].address, 1)], tmp_path / "s.db"))
    bal = Balancer(load_config(path))
    await bal.start()
    try:
        port = bal.addresses[0][1]
        live = await rdp_connect(port, "alice")
        homes = {u: await where(port, u) for u in ("bob", "carol", "dave")}

        async def stream() -> int:
            rounds = 0
            for i in range(200):
                msg = f"ping{i:04d}".encode()
                live.writer.write(msg)
                assert await asyncio.wait_for(live.reader.readexactly(len(msg)), 5) == msg
                rounds += 1
                await asyncio.sleep(0)
            return rounds

        traffic = asyncio.create_task(stream())
        # reload 1: add C, drop B, re-weight A
        path.write_text(farm_config([("A", farm[0].address, 5), ("C", farm[2].address, 1)], tmp_path / "s.db"))
        assert await bal.reloader.reload() is None
        # reload 2: a broken file is refused, the running configuration stays
        path.write_text("[balancer\nthis is not toml")
        error = await bal.reloader.reload()
        assert error is not None and "line 1" in error
        assert bal.reloader.status.last_reload_error == error and bal.reloader.status.reloads_failed == 1
        assert await traffic == 200  # the live session kept flowing through both reloads
        assert [m.server.name for m in bal.snapshot.policy.pools[0].members] == ["A", "C"]
        assert bal.snapshot.policy.pools[0].members[0].weight == 5
        for user, home in homes.items():  # sticky table kept; B's users go elsewhere
            now = await where(port, user)
            assert now == home if home != "B" else now in {"A", "C"}
        await live.close()
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()


async def test_runtime_admin_state_survives_reload(tmp_path: Path) -> None:
    farm = await start_farm("A", "B")
    path = tmp_path / "c.toml"
    path.write_text(farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db"))
    bal = Balancer(load_config(path))
    await bal.start()
    try:
        bal.ops.set_admin_state("A", AdminState.DRAIN)
        assert await bal.reloader.reload() is None
        assert bal.router.condition("A").admin is AdminState.DRAIN
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()


async def test_reload_adds_and_removes_listeners(tmp_path: Path) -> None:
    farm = await start_farm("A")
    path = tmp_path / "c.toml"
    path.write_text(farm_config([("A", farm[0].address, 1)], tmp_path / "s.db"))
    bal = Balancer(load_config(path))
    await bal.start()
    try:
        p1 = bal.addresses[0][1]
        live = await rdp_connect(p1, "alice")
        # another address, on port 0 too: the reload opens it and closes 127.0.0.1:0
        path.write_text(farm_config([("A", farm[0].address, 1)], tmp_path / "s.db", listen="127.0.0.2:0"))
        assert await bal.reloader.reload() is None
        [(host, p2)] = bal.addresses  # the port it took
        assert host == "127.0.0.2"
        assert await where(p2, "bob", host="127.0.0.2") == "A"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p1)) != 0  # the old address is closed
        live.writer.write(b"ok?")
        assert await asyncio.wait_for(live.reader.readexactly(3), 5) == b"ok?"  # its session goes on
        await live.close()
    finally:
        await bal.stop()
        await farm[0].stop()


@pytest.mark.processes
def test_sighup_reload_and_sd_notify(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(notify_path))
        sd.settimeout(15)
        cfg = tmp_path / "c.toml"
        cfg.write_text(farm_config([("A", "127.0.0.1:9", 1)], tmp_path / "s.db"))
        # on port 0: start() reads the port from the start-up line
        proc = BalancerProcess(cfg, 0, tmp_path / "b.log", env={"NOTIFY_SOCKET": str(notify_path)})
        proc.start()
        try:
            # sent once it serves: its signal handlers are in place, SIGHUP reloads (it accepted
            # connections already, and would have refused a SIGHUP as "received while starting")
            assert sd.recv(4096).decode().startswith("READY=1")
            cfg.write_text(cfg.read_text().replace('"127.0.0.1:9"', '"127.0.0.1:10"'))
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGHUP)
            assert sd.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert sd.recv(4096).decode() == "READY=1"
            assert proc.signal(signal.SIGTERM) == 0
            assert sd.recv(4096).decode() == "STOPPING=1"
        finally:
            proc.stop()
    assert "configuration reloaded" in (tmp_path / "b.log").read_text()


TOKEN = "reload-test-token-0123456789"


@pytest.mark.processes
@pytest.mark.parametrize("workers", [1, 2])
async def test_reloads_at_once_are_serialised(tmp_path: Path, workers: int, fixed_port: Callable[[], int]) -> None:
    """POST /api/v1/reload and SIGHUP together, with a listen address added, then removed: the
    address was sometimes bound twice and one listener stayed open after its removal; with
    workers one reload waited 10 s for a confirmation that another reload had taken."""
    farm = await start_farm("A")
    port = 0  # the first listener's: read from the start-up line, and the admin API's from the line before
    # the address the reloads add and remove: a fixed port, two reloads binding it at once is the
    # fault (on port 0 each would bind a port of its own)
    extra = fixed_port()
    path = tmp_path / "c.toml"

    def write(*listen: int) -> None:
        text = farm_config([("A", farm[0].address, 1)], tmp_path / "s.db", listen=f"127.0.0.1:{port}",
                           balancer_extra=f"workers = {workers}")
        text = text.replace(f'listen = ["127.0.0.1:{port}"]', "listen = [" + ", ".join(
            f'"127.0.0.1:{p}"' for p in (port, *listen)) + "]")
        path.write_text(text.replace('[admin]\nlisten = "127.0.0.1:0"',
                                     f'[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"'))

    token = tmp_path / "admin.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    write()
    proc = BalancerProcess(path, 0, tmp_path / "b.log")
    await asyncio.to_thread(proc.start)
    log = tmp_path / "b.log"
    admin_port = proc.admin_port
    try:
        await wait_serving(log, 15)  # it acts on SIGHUP from this line on
        assert proc.proc is not None
        async with aiohttp.ClientSession() as http:
            for i in range(6):
                write(extra)
                proc.proc.send_signal(signal.SIGHUP)
                async with http.post(f"http://127.0.0.1:{admin_port}/api/v1/reload", headers=auth) as resp:
                    assert resp.status == 200, await resp.text()  # a valid reload never fails
                await wait_until(lambda: _accepts(extra), 10)
                # the SIGHUP's reload too (3 per round: the signal's, the API's, the removal's)
                await wait_until(lambda i=i: log.read_text().count("configuration reloaded") >= 3 * i + 2, 10)
                write()
                async with http.post(f"http://127.0.0.1:{admin_port}/api/v1/reload", headers=auth) as resp:
                    assert resp.status == 200, await resp.text()
                assert not _accepts(extra), "a removed listen address still accepts"
        text = log.read_text()
        assert "did not confirm" not in text and "ERROR" not in text, text[-3000:]
    finally:
        proc.stop()
        await farm[0].stop()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
