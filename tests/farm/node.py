"""One balancer node for the farm simulator: real `python -m rdpbalancer run` processes on fixed
loopback ports (held, so a restart and a handoff's successor bind the same ones), under a stepped
wall clock (libfaketime, as tests/component/test_clock_steps.py does), with the chaos a node can
suffer: reload (SIGHUP), handoff (SIGUSR2), a worker killed, the whole node killed and restarted.

Every process is stopped by its PID: the primary we started, the successors of handoffs (read
from the admin API) and the old processes still draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.balancer import BalancerProcess, farm_config, hold_port, process_gone

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
API_TIMEOUT_S = 5.0


class SteppedClock:
    """The offset libfaketime applies to the balancer's wall clock, read at every call
    (FAKETIME_NO_CACHE); the monotonic clock is left alone. Copied from
    tests/component/test_clock_steps.py (the minimum, not imported across test modules)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0.0
        self._write("+0")

    @property
    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_NO_CACHE": "1", "DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def step(self, seconds: float) -> None:
        self.offset += seconds
        self._write(f"{self.offset:+.0f}")

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, self.path)


@dataclass
class Timings:
    """The balancer's settings in real seconds (the simulator scales a farm's down)."""

    push_interval_s: float
    stale_after_s: float
    logon_grace_s: float
    failover_after_s: float
    health_interval_s: float = 0.5
    health_timeout_s: float = 1.0
    rise: int = 2
    fall: int = 3


@dataclass
class Node:
    workdir: Path
    hosts: list[tuple[str, str]]  # name, address
    tokens: dict[str, str]
    timings: Timings
    workers: int = 2
    faketime: bool = True
    redis_url: str | None = None  # the table in Redis (a second node shares it), with a SQLite copy
    sentinels: tuple[str, ...] = ()  # instead of redis_url: the master as Sentinel names it
    name: str = "A"
    admin_token: str = "farm-sim-admin-token-0123456789"
    proc: BalancerProcess | None = None
    primary: int | None = None
    draining: set[int] = field(default_factory=set)  # old processes of handoffs, still relaying
    known_pids: set[int] = field(default_factory=set)
    clock: SteppedClock | None = None
    http: aiohttp.ClientSession | None = None
    _held: list[socket.socket] = field(default_factory=list)
    port: int = 0
    admin_port: int = 0
    changed: bool = False  # the file as a changing reload left it

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._held = [hold_port(), hold_port()]
        self.port, self.admin_port = (int(s.getsockname()[1]) for s in self._held)
        self.log = self.workdir / "rdpb.log"
        self.config = self.workdir / "rdpb.toml"
        self.config.write_text(self.config_text())
        if self.faketime:
            if not FAKETIME_LIB.exists():
                raise RuntimeError(f"{FAKETIME_LIB} missing: apt-get install faketime")
            self.clock = SteppedClock(self.workdir / "faketime")

    def config_text(self) -> str:
        t = self.timings
        tokens = self.workdir / "push-tokens.toml"
        tokens.write_text("".join(f'{k} = "{v}"\n' for k, v in self.tokens.items()))
        tokens.chmod(0o600)
        admin = self.workdir / "admin.token"
        admin.write_text(self.admin_token)
        admin.chmod(0o600)
        health = (f'check = "rdp"\ninterval = "{t.health_interval_s}s"\ntimeout = "{t.health_timeout_s}s"\n'
                  f'rise = {t.rise}\nfall = {t.fall}\nfailover_after = "{t.failover_after_s}s"')
        text = farm_config([(n, a, 1) for n, a in self.hosts], self.workdir / "sticky.db",
                           listen=f"127.0.0.1:{self.port}", balance="leastsessions", health=health,
                           balancer_extra=f"workers = {self.workers}\n")
        text = text.replace('handshake_timeout = "1s"', 'handshake_timeout = "5s"')
        text = text.replace('[admin]\nlisten = "127.0.0.1:0"',
                            f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\ntoken_file = "{admin}"')
        if self.redis_url is not None or self.sentinels:
            where = (f'sentinels = [{", ".join(repr(a) for a in self.sentinels)}]\nservice_name = "rdpb"'
                     if self.sentinels else f'url = "{self.redis_url}"')
            text = text.replace("[sticky]\n", '[sticky]\nstore = "redis"\n', 1)
            text += f'\n[sticky.redis]\n{where}\nkey_prefix = "farm{os.getpid()}:"\ntimeout = "1s"\n'

        return text + (f'[sessions]\nsource = "push"\npush_tokens = "{tokens}"\n'
                       f'stale_after = "{t.stale_after_s}s"\nlogon_grace = "{t.logon_grace_s}s"\n')

    # -- processes -----------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return self.clock.env if self.clock is not None else {}

    async def start(self) -> None:
        self.proc = BalancerProcess(self.config, self.port, self.log, env=self.env)
        await asyncio.to_thread(self.proc.start, 30.0)
        assert self.proc.proc is not None
        self.primary = self.proc.proc.pid
        self.known_pids.add(self.primary)
        await self.wait_api(30.0)
        await self.note_workers()

    async def wait_api(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while await self.get("/api/v1/workers") is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no admin API on {self.admin_port}:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    async def note_workers(self) -> list[dict[str, Any]]:
        doc = await self.get("/api/v1/workers")
        workers = doc["workers"] if doc else []
        self.known_pids.update(int(w["pid"]) for w in workers if w.get("pid"))
        return workers  # type: ignore[no-any-return]

    def reload(self, change: bool = False) -> None:
        """SIGHUP to the primary; `change`: the file changed first (the session directory's
        settings and a host's weight, back and forth: the directory is rebuilt)."""
        assert self.primary is not None
        if change:
            self.changed = not self.changed
            text = self.config_text()
            if self.changed:
                t = self.timings
                text = text.replace(f'stale_after = "{t.stale_after_s}s"', f'stale_after = "{t.stale_after_s + 0.5}s"')
                text = text.replace("weight = 1 }", "weight = 2 }", 1)
            self.config.write_text(text)
        os.kill(self.primary, signal.SIGHUP)

    async def handoff(self, timeout_s: float = 30.0) -> bool:
        """SIGUSR2 to the primary; True once another process serves the admin API."""
        old = self.primary
        assert old is not None
        os.kill(old, signal.SIGUSR2)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            doc = await self.get("/api/v1/workers")
            pid = int(doc["workers"][0]["pid"]) if doc else None
            if pid is not None and pid != old:
                self.primary = pid
                self.known_pids.add(pid)
                self.draining.add(old)
                await self.note_workers()
                return True
            await asyncio.sleep(0.1)
        return False

    async def kill_worker(self) -> int | None:
        workers = [w for w in await self.note_workers() if w.get("role") == "worker" and w.get("alive")]
        if not workers:
            return None
        pid = int(workers[0]["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    async def kill_and_restart(self) -> None:
        """kill -9 of the node: the primary and any old process still draining (their workers
        exit with them), then a fresh start on the same file and ports."""
        victims = [p for p in {self.primary, *self.draining} if p is not None]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.proc is not None:
            await asyncio.to_thread(self.proc.proc.wait)
            self.proc.proc = None
        deadline = time.monotonic() + 20
        while any(not process_gone(p) and self.ours(p) for p in self.known_pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.draining.clear()
        await self.start()

    def ours(self, pid: int) -> bool:
        """A live process of this node (its command line names our config file): a PID noted
        once may have been reused by another process since."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(self.config).encode() in cmdline:
                return True
            if b"rdpbalancer\0worker\0" not in cmdline:
                return False
            ppid = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("PPid:"))
            return ppid in self.known_pids and str(self.config).encode() in Path(f"/proc/{ppid}/cmdline").read_bytes()
        except (OSError, StopIteration, ValueError):
            return False

    def gone_draining(self) -> None:
        self.draining = {p for p in self.draining if not process_gone(p)}

    async def stop(self) -> None:
        pids = [p for p in {self.primary, *self.draining} if p is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while not all(process_gone(p) for p in pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for pid in self.known_pids:
            if not process_gone(pid) and self.ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.proc.proc.wait, 10)
        if self.http is not None:
            await self.http.close()
        for s in self._held:
            s.close()

    # -- the admin API ----------------------------------------------------------------------------

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S))
        return self.http

    async def get(self, path: str) -> Any:
        """The JSON of a GET, None when the API does not answer 200 (a node restarting)."""
        try:
            async with self.session().get(self.api + path) as resp:
                if resp.status != 200:
                    return {"status": resp.status} if resp.status == 404 else None
                return await resp.json()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def post(self, path: str, body: dict[str, Any]) -> int | None:
        try:
            async with self.session().post(self.api + path, json=body,
                                           headers={"Authorization": f"Bearer {self.admin_token}"}) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def delete(self, path: str) -> int | None:
        try:
            async with self.session().delete(self.api + path,
                                             headers={"Authorization": f"Bearer {self.admin_token}"}) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def push(self, host: str, body: dict[str, Any]) -> int | None:
        try:
            async with self.session().put(f"{self.api}/api/v1/hosts/{host}/sessions", json=body,
                                          headers={"Authorization": f"Bearer {self.tokens[host]}"}) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    def fds(self) -> dict[int, int]:
        """Open file descriptors of every live process of the node."""
        out = {}
        for pid in self.known_pids:
            if process_gone(pid) or not self.ours(pid):
                continue
            with contextlib.suppress(OSError):
                out[pid] = len(os.listdir(f"/proc/{pid}/fd"))
        return out

    def file_fds(self, pid: int | None = None) -> int:
        """Open fds of the primary (or `pid`) that are not sockets (files, pipes, /dev/null, event
        and io_uring inodes): they do not follow the traffic, so they stay flat across a day,
        however many handoffs. Left out: pipes whose both ends the process holds (the splice
        relay's pool of idle pipes, bounded by PIPE_POOL_MAX, and the loop's own wake-up pipes;
        counted by `pipe_pairs`) and the sticky table's SQLite files (opened at the first write)."""
        return len(self.file_fd_targets(pid))

    def _targets(self, pid: int | None) -> list[str]:
        pid = pid or self.primary
        targets = []
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        return targets

    def file_fd_targets(self, pid: int | None = None) -> list[str]:
        """What those fds point at (a pipe or an inode kind without its number), for a report."""
        targets = [t for t in self._targets(pid) if not t.startswith("socket:")]
        pipes = Counter(t for t in targets if t.startswith("pipe:"))
        store = str(self.workdir / "sticky.db")
        return sorted(t.split(":[")[0] for t in targets if pipes.get(t, 0) < 2 and not t.startswith(store))

    def pipe_pairs(self, pid: int | None = None) -> int:
        """Pipes whose both ends the primary holds (the splice pool's idle pipes, the loop's own)."""
        return sum(1 for n in Counter(t for t in self._targets(pid) if t.startswith("pipe:")).values() if n >= 2)

    def rss_kb(self) -> dict[int, int]:
        out = {}
        for pid in self.known_pids:
            if process_gone(pid) or not self.ours(pid):
                continue
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1])
        return out
