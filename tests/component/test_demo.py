"""`rdpbalancer demo` as a newcomer runs it: a real process, its output, its admin API, its exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
# until cli.py wires `demo`, run its own entry point; `python -m rdpbalancer demo` runs the same code
DEMO = [sys.executable, "-m", "rdpbalancer", "demo"]
START_TIMEOUT_S = 30.0  # imports and three hosts on a slow CI machine
EXIT_TIMEOUT_S = 30.0


@dataclass
class DemoRun:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self.changed.set()

    async def wait_for(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> re.Match[str]:
        """The first output line matching `pattern`, waiting for it if need be."""
        async with asyncio.timeout(timeout_s):
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                if self.proc.returncode is not None and self.reader is not None and self.reader.done():
                    raise AssertionError("the demo exited:\n" + "\n".join(self.lines))
                self.changed.clear()
                await self.changed.wait()

    async def exit_code(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, timeout_s)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def demo(*args: str) -> AsyncIterator[DemoRun]:
    proc = await asyncio.create_subprocess_exec(
        *DEMO, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run = DemoRun(proc)
    run.reader = asyncio.create_task(run._read())
    try:
        yield run
    finally:
        if proc.returncode is None:  # a failed test: stop the demo we started, by its pid
            proc.kill()
            await proc.wait()
        run.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.reader


async def api(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def banner(run: DemoRun) -> tuple[str, str, Path]:
    """The dashboard URL, the token and the state directory the demo printed."""
    url = (await run.wait_for(r"^  dashboard: (http://127\.0\.0\.1:\d+)/$"))[1]
    token = (await run.wait_for(r"^  token: (\S+)$"))[1]
    state = Path((await run.wait_for(r"^  state: (\S+)  \(removed on exit\)$"))[1])
    await run.wait_for(r"^  balancer: 127\.0\.0\.1:\d+$")
    return url, token, state


async def test_demo_shows_a_farm_and_stops_by_itself() -> None:
    async with demo("--duration", "8", "--port", "0", "--admin-port", "0") as run:
        url, token, state = await banner(run)
        assert state.is_dir() and (state / "admin.token").stat().st_mode & 0o777 == 0o600
        status, servers = await api(f"{url}/api/v1/servers")
        assert status == 200 and [s["name"] for s in servers["servers"]] == ["TS01", "TS02", "TS03"]
        await run.wait_for(r"rdpbalancer\.demo \w+ +logs on  -> TS0[123]  \(new user", timeout_s=10)
        status, decisions = await api(f"{url}/api/v1/decisions")
        assert status == 200 and decisions["decisions"]
        assert {d["server"] for d in decisions["decisions"]} <= {"TS01", "TS02", "TS03"}
        assert (await api(f"{url}/api/v1/servers/TS01/weight", "POST", {"weight": 2}))[0] == 401
        status, changed = await api(f"{url}/api/v1/servers/TS01/weight", "POST", {"weight": 2}, token)
        assert status == 200 and changed["pools"][0]["weight"] == 2  # the dashboard's buttons work
        assert await run.exit_code() == 0, run.output
    assert "stopping the demo" in run.output and "Traceback" not in run.output
    assert not state.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_stops_the_demo_and_removes_its_state(sig: signal.Signals) -> None:
    with socket.socket() as busy:  # the admin port asked for is taken: the demo takes a free one
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        async with demo("--port", "0", "--admin-port", str(taken)) as run:
            url, _, state = await banner(run)
            assert url != f"http://127.0.0.1:{taken}" and state.is_dir()
            await run.wait_for(r"logs on  -> TS0", timeout_s=10)
            run.proc.send_signal(sig)
            assert await run.exit_code() == 0, run.output
    assert not state.exists()
    assert "Traceback" not in run.output


async def test_bad_arguments_exit_2() -> None:
    async with demo("--duration", "-1") as run:
        assert await run.exit_code() == 2
    assert "expected a positive number of seconds" in run.output
