"""A real balancer process whose sticky file sits on a disk that fills up or turns read-only.

The sticky SQLite file lives on a small tmpfs (we run as root). While the disk refuses writes,
new users are still routed and sticky (the in-memory table is authoritative), and the trouble
is loud: an ERROR log line naming the file and the number of changes kept, failed commits and
unsaved changes in /metrics, `sticky_store_ok: false` in /healthz. Once the disk accepts writes
again the kept changes are saved without any new traffic, and a kill -9 then loses nobody.
"""

from __future__ import annotations

import asyncio
import errno
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.balancer import BalancerProcess, farm_config, stored
from tests.support.fakes import FakeRdpServer, start_farm, where

DISK_SIZE = "1m"  # room for the sticky file, its WAL and shm; small enough to fill in a moment
FILL_BLOCK_BYTES = 4096  # tmpfs allocates whole pages: the filler stops when not one is left
FILL_MAX_BLOCKS = 1024  # 4 MiB: a bound on the fill loop, well above DISK_SIZE
SAVE_TIMEOUT_S = 15.0  # the writer retries kept changes every 5 s (RETRY_UNSAVED_S)
POLL_INTERVAL_S = 0.05
USERS_BEFORE = [f"saved{i}" for i in range(4)]  # placed while the disk is fine
USERS_DURING = [f"fault{i}" for i in range(12)]  # placed while the disk refuses writes


# -- the disk ---------------------------------------------------------------------------------------

def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def tmpfs(mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0755", "tmpfs", str(mountpoint))
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root and CAP_SYS_ADMIN needed): {done.stderr.strip()}", pytrace=False)
    try:
        yield mountpoint
    finally:
        if _run("umount", str(mountpoint)).returncode != 0:
            _run("umount", "-l", str(mountpoint))  # something still holds it: detach anyway


def remount(mountpoint: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return _run("mount", "-o", f"remount,{mode}", str(mountpoint))


def fill(mountpoint: Path) -> Path:
    """Write zeros until the filesystem has no free block left."""
    filler = mountpoint / "filler"
    with filler.open("wb", buffering=0) as f:
        for _ in range(FILL_MAX_BLOCKS):
            try:
                f.write(b"\0" * FILL_BLOCK_BYTES)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler
    raise AssertionError(f"{mountpoint} never filled up")


def open_for_writing(pid: int, mountpoint: Path) -> list[str]:
    """Files under `mountpoint` the process holds open with write access (these make the kernel
    refuse `remount,ro` with EBUSY)."""
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if target.is_relative_to(mountpoint) and flags & 0o3:  # O_WRONLY or O_RDWR
            held.append(str(target))
    return held


# -- the balancer -------------------------------------------------------------------------------------

@dataclass
class Running:
    proc: BalancerProcess
    db: Path
    log: Path
    farm: list[FakeRdpServer]

    @property
    def admin_port(self) -> int:
        assert self.proc.admin_port is not None
        return self.proc.admin_port  # on port 0 too: each start's is read from its log

    async def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        async with asyncio.timeout(10), aiohttp.ClientSession() as http, http.get(url) as resp:
            body = await (resp.json() if path != "/metrics" else resp.text())
            return resp.status, body

    async def metric(self, name: str) -> float:
        _, text = await self.get("/metrics")
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))

    async def unsaved(self) -> float:
        return await self.metric("rdpbalancer_sticky_store_unsaved_changes")

    async def failed_commits(self) -> float:
        return await self.metric('rdpbalancer_sticky_store_commits_total{result="failure"}')

    async def wait_saved(self) -> float:
        """Seconds until no change is kept in memory any more."""
        start = time.monotonic()
        while await self.unsaved() > 0:
            assert time.monotonic() - start < SAVE_TIMEOUT_S, "kept changes never saved"
            await asyncio.sleep(POLL_INTERVAL_S)
        return time.monotonic() - start

    async def route(self, users: list[str]) -> dict[str, str]:
        return {u: await where(self.proc.port, u) for u in users}  # the port each start took

    async def restart(self, sig: signal.Signals) -> None:
        await asyncio.to_thread(self.proc.signal, sig)
        await asyncio.to_thread(self.proc.start)


@asynccontextmanager
async def balancer_on(disk: Path, workdir: Path) -> AsyncIterator[Running]:
    farm = await start_farm("TS01", "TS02")
    db, log = disk / "sticky.db", workdir / "balancer.log"
    text = farm_config([(s.name, s.address, 1) for s in farm], db)
    text = text.replace('sync = "normal"', 'sync = "full"')  # the default
    cfg = workdir / "rdpb.toml"
    cfg.write_text(text)
    proc = BalancerProcess(cfg, 0, log)  # on port 0: each start's port is read from its start-up line
    try:
        await asyncio.to_thread(proc.start)
        yield Running(proc, db, log, farm)
    finally:
        proc.stop()  # before the unmount: the process holds the file
        for s in farm:
            await s.stop()


@contextmanager
def reader(db: Path) -> Iterator[None]:
    """Another connection on the file, as a monitoring script or `rdpbalancer explain` would hold.

    It keeps the WAL and its index (-shm) in place, so a failed commit is the WAL unable to grow
    ("database or disk is full"). Alone, the writer would alternate: a failed commit makes it
    reopen its connection, closing the last connection checkpoints the WAL into the database and
    deletes it, which frees the WAL's pages for the next few commits; then recreating the WAL
    index fails as "disk I/O error". Nothing is lost in either case.
    """
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sticky").fetchone()  # maps the WAL index
        yield
    finally:
        conn.close()




async def restart_with_the_file_closed(bal: Running, disk: Path) -> None:
    """A clean restart: the sticky file stays closed until the first change.

    The kernel refuses a read-only remount (EBUSY) while a file on it is open for writing.
    """
    assert await bal.failed_commits() == 0
    await bal.restart(signal.SIGTERM)
    pid = bal.proc.proc.pid  # type: ignore[union-attr]
    assert not open_for_writing(pid, disk), "the sticky file is open before any change"


# -- the shared expectations ------------------------------------------------------------------------

async def routes_and_reports_while_refused(bal: Running, error: str) -> dict[str, str]:
    """New users are placed and sticky while writes fail, and the failure shows everywhere."""
    placed = await bal.route(USERS_DURING)
    assert await bal.route(USERS_DURING) == placed, "users moved while the disk refused writes"
    assert await bal.failed_commits() > 0
    assert await bal.unsaved() >= len(USERS_DURING)
    status, health = await bal.get("/healthz")
    assert (status, health["status"], health["sticky_store_ok"]) == (200, "degraded", False), health
    assert error in health["sticky_store_error"], health
    lines = re.findall(rf"ERROR rdpbalancer.store sticky table write to {re.escape(str(bal.db))} failed "
                       rf"\(\d+ failed write\(s\) since the last line\); "
                       rf"(\d+) user\(s\) kept in memory, retried every \S+s: (.*)", bal.log.read_text())
    assert lines, "no error log line for the failed writes"
    assert int(lines[-1][0]) >= 1 and error in lines[-1][1], lines[-1]  # one line a minute while failing
    return placed


async def nobody_lost_after_kill_9(bal: Running, placed: dict[str, str]) -> None:
    assert "change(s) kept in memory are saved now" in bal.log.read_text()
    await bal.restart(signal.SIGKILL)
    assert stored(bal.db) == placed
    assert await bal.route(list(placed)) == placed


# -- the tests ----------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_disk_full_keeps_routing_and_saves_everything_once_space_is_back(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        async with balancer_on(disk, tmp_path) as bal:
            before = await bal.route(USERS_BEFORE)
            await bal.wait_saved()
            assert await bal.failed_commits() == 0
            with reader(bal.db):
                filler = fill(disk)
                during = await routes_and_reports_while_refused(bal, "database or disk is full")
                filler.unlink()
                await bal.wait_saved()  # by the retry timer alone: no new traffic
            await nobody_lost_after_kill_9(bal, {**before, **during})


@pytest.mark.slow
async def test_read_only_disk_keeps_routing_and_saves_everything_once_writable(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        async with balancer_on(disk, tmp_path) as bal:
            before = await bal.route(USERS_BEFORE)
            await bal.wait_saved()
            # the kernel refuses `remount,ro` (EBUSY) while a file on it is open for writing
            assert remount(disk, "ro").returncode != 0
            await restart_with_the_file_closed(bal, disk)
            done = remount(disk, "ro")
            assert done.returncode == 0, done.stderr
            # a WAL database on a read-only disk cannot even be opened: no WAL index can be made
            during = await routes_and_reports_while_refused(bal, "unable to open database file")
            done = remount(disk, "rw")
            assert done.returncode == 0, done.stderr
            await bal.wait_saved()
            await nobody_lost_after_kill_9(bal, {**before, **during})
