"""Steps of the wall clock change no routing decision (issue 24, item 5; rdpbalancer/clock.py).

The balancer runs as a real process (`python -m rdpbalancer run`) under libfaketime: its
time.time() is stepped 10 minutes back or forth at once, as an NTP step or an admin's `date -s`
would, while CLOCK_MONOTONIC goes on untouched. The fake RDP servers, the hosts pushing their
session lists and the test's own timing run on the real clock, in the test process. Every
duration the balancer measures (the age of a host's list, the order of its answers, how long a
server is down, a slow-start ramp) must run in real time across the step.

Debian package `faketime` (scripts/install-test-deps.sh): without its library these tests fail.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.component.test_health import FAST_CHECKS, refused
from tests.component.test_session_directory import TOKENS, secret
from tests.support.balancer import BalancerProcess, farm_config
from tests.support.fakes import FakeRdpServer, start_farm, where

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
STEP_S = 600.0  # the 10 minutes
ADMIN_TOKEN = "clock-steps-admin-token-0123456789"
WAIT_S = 15.0  # bound of every poll
POLL_S = 0.05
FAILOVER_AFTER_S = 3.0
SLOWSTART_S = 20.0
ROUTED = re.compile(r"^(\S+Z) INFO \S+ session=\S+ routed (.*)$")
FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


class SteppedClock:
    """The offset libfaketime applies to the balancer's wall clock, read again at every call
    (FAKETIME_NO_CACHE); the monotonic clock is left alone (DONT_FAKE_MONOTONIC)."""

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
        os.replace(tmp, self.path)  # the process never reads a half-written file


@dataclass
class Run:
    """The balancer process under a stepped clock, its ports, log and API."""

    proc: BalancerProcess
    port: int
    admin_port: int
    log: Path
    clock: SteppedClock
    http: aiohttp.ClientSession
    probes: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def get(self, path: str) -> Any:
        async with self.http.get(self.api + path) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
            return await resp.json()

    async def put_sticky(self, user: str, server: str) -> None:
        async with self.http.put(f"{self.api}/api/v1/sticky/{user}", json={"server": server},
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 200, await resp.text()

    async def push(self, server: str, sessions: list[dict[str, str]]) -> None:
        """A host's own list (source = "push"), with its own token; answered 200."""
        async with self.http.put(f"{self.api}/api/v1/hosts/{server}/sessions", data=json.dumps({"sessions": sessions}),
                                 headers={"Authorization": f"Bearer {TOKENS[server]}",
                                          "Content-Type": "application/json"}) as resp:
            assert resp.status == 200, await resp.text()

    async def hosts(self) -> dict[str, dict[str, Any]]:
        return {h["server"]: h for h in (await self.get("/api/v1/hosts"))["hosts"]}

    async def servers(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in (await self.get("/api/v1/servers"))["servers"]}

    async def explain(self, user: str) -> dict[str, Any]:
        return (await self.get(f"/api/v1/explain?user={user}"))["decision"]  # type: ignore[no-any-return]

    def routed_lines(self, user: str) -> list[tuple[float, dict[str, str]]]:
        """The balancer's `routed` log lines for `user`: each one's stamp (the process's wall
        clock) and fields (server, reason, moved_from, ...)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = ROUTED.match(line)
            if m is not None:
                fields = {k: v.strip('"') for k, v in FIELD.findall(m.group(2))}
                if fields.get("user") == user:
                    out.append((stamp(m.group(1)), fields))
        return out

    async def connect(self, user: str) -> tuple[float, dict[str, str]]:
        """`user` connects through the balancer: the log line of this routing (the server that
        answered must be the one it names)."""
        seen = len(self.routed_lines(user))
        server = await where(self.port, user)
        deadline = time.monotonic() + WAIT_S
        while len(lines := self.routed_lines(user)) <= seen:
            assert time.monotonic() < deadline, f"no routed line for {user}:\n{self.log.read_text()[-3000:]}"
            await asyncio.sleep(POLL_S)
        at, fields = lines[-1]
        assert fields["server"] == server, fields
        return at, fields

    async def step(self, seconds: float) -> None:
        """Step the balancer's wall clock, and check in its log that the step took effect."""
        self.clock.step(seconds)
        self.probes += 1
        at, _fields = await self.connect(f"clockprobe{self.probes}")
        assert abs(at - (time.time() + self.clock.offset)) < 30, \
            f"the balancer's wall clock reads {at - time.time():+.0f}s off, not {self.clock.offset:+.0f}s: " \
            "libfaketime did not step it"


def stamp(text: str) -> float:
    """A log stamp (2026-12-07T02:49:02.123Z, UTC) as seconds since the epoch."""
    whole, _, millis = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


async def poll(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> float:
    """Until `check()` is true, at most `timeout_s`; the seconds it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s:.0f}s"
        await asyncio.sleep(POLL_S)
    return time.monotonic() - start


@asynccontextmanager
async def stepped_balancer(tmp_path: Path, farm: list[FakeRdpServer], *, health: str = 'check = "none"',
                           balancer_extra: str = "", sessions: str = "") -> AsyncIterator[Run]:
    """The balancer in front of `farm`, under a stepped clock; stops it and the farm after."""
    proc = None
    try:
        assert FAKETIME_LIB.is_file(), f"{FAKETIME_LIB} is missing: install the Debian package faketime " \
                                       "(scripts/install-test-deps.sh)"
        token = secret(tmp_path / "admin.token", ADMIN_TOKEN + "\n")
        text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db",
                           extra=f'token_file = "{token}"\n', health=health, balancer_extra=balancer_extra)
        if sessions:
            tokens = secret(tmp_path / "push.toml", "".join(f'{k} = "{v}"\n' for k, v in TOKENS.items()))
            text += f'[sessions]\nsource = "push"\npush_tokens = "{tokens}"\n{sessions}'
        config = tmp_path / "rdpb.toml"
        config.write_text(text)
        clock = SteppedClock(tmp_path / "faketime")
        proc = BalancerProcess(config, 0, tmp_path / "rdpb.log", env=clock.env)  # the ports: from its log
        proc.start()  # its admin API listens before its start-up line
        assert proc.admin_port is not None
        async with aiohttp.ClientSession() as http:
            yield Run(proc, proc.port, proc.admin_port, tmp_path / "rdpb.log", clock, http)
    finally:
        if proc is not None:
            proc.stop()
        for s in farm:
            await s.stop()


# -- the session directory: the order of a host's answers, the age of its list ---------------------


async def test_a_push_after_the_clock_steps_back_is_used(tmp_path: Path) -> None:
    """Before: the list pushed after a backward step was answered 200 and dropped (its stamp was
    older than the last one); alice was sent to TS02, where her session no longer is."""
    farm = await start_farm("TS01", "TS02", "TS03")
    alice = [{"user": "alice", "domain": "CORP", "state": "disconnected", "id": "7"}]
    async with stepped_balancer(tmp_path, farm, sessions='stale_after = "60s"\n') as run:
        for name in TOKENS:
            await run.push(name, alice if name == "TS02" else [])
        _at, fields = await run.connect("alice")
        assert (fields["server"], fields["reason"]) == ("TS02", "session"), fields

        await run.step(-STEP_S)
        for name in TOKENS:  # she logged off TS02 and on to TS03, and disconnected there
            await run.push(name, alice if name == "TS03" else [])
        hosts = await run.hosts()
        assert {n: h["sessions"] for n, h in hosts.items()} == {"TS01": 0, "TS02": 0, "TS03": 1}, \
            "a push after the step was dropped"
        for name, host in hosts.items():
            assert host["fresh"] is True and 0 <= host["age_s"] < 5, (name, host)
        _at, fields = await run.connect("alice")
        assert (fields["server"], fields["reason"]) == ("TS03", "session"), fields


@pytest.mark.parametrize("step", [-STEP_S, STEP_S], ids=["back", "forward"])
async def test_a_hosts_list_ages_in_real_time_whichever_way_the_clock_steps(tmp_path: Path, step: float) -> None:
    """Before: after a step back, the lists from before it had a negative age: fresh for 10
    minutes more (a returning user judged on stale lists); after a step forward they were 10
    minutes old at once (stale)."""
    farm = await start_farm("TS01", "TS02", "TS03")
    alice = [{"user": "alice", "state": "disconnected", "id": "3"}]
    async with stepped_balancer(tmp_path, farm, sessions='stale_after = "3s"\n') as run:
        for name in TOKENS:
            await run.push(name, alice if name == "TS02" else [])
        pushed = time.monotonic()
        await run.step(step)
        hosts = await run.hosts()
        for name, host in hosts.items():
            assert host["fresh"] is True and 0 <= host["age_s"] <= time.monotonic() - pushed + 1, (name, host)
        _at, fields = await run.connect("alice")
        assert (fields["server"], fields["reason"]) == ("TS02", "session"), fields

        async def all_stale() -> bool:
            return not any(h["fresh"] for h in (await run.hosts()).values())

        await poll("the lists go stale", all_stale)
        assert time.monotonic() - pushed >= 3.0 - 0.5  # not before stale_after
        # nobody pushed since: the lists are no evidence now; her entry decides
        decision = await run.explain("alice")
        assert (decision["reason"], decision["servers"]) == ("sticky-hit", ["TS02"]), decision


# -- a down server and failover_after ------------------------------------------------------------


@pytest.mark.parametrize("step", [-STEP_S, STEP_S], ids=["back", "forward"])
async def test_a_user_of_a_down_server_moves_after_failover_after_whichever_way_the_clock_steps(
        tmp_path: Path, step: float) -> None:
    """Before: `down for` ran on the wall clock. A step back while TS01 was down held alice on the
    dead server for 10 minutes instead of failover_after; a step forward moved her at once."""
    farm = await start_farm("TS01", "TS02", "TS03")
    health = FAST_CHECKS + f'failover_after = "{FAILOVER_AFTER_S:.0f}s"\n'
    async with stepped_balancer(tmp_path, farm, health=health) as run:

        async def health_is(server: str, state: str) -> bool:
            return bool((await run.servers())[server]["health"] == state)

        for s in farm:
            await poll(f"{s.name} up", partial(health_is, s.name, "up"))
        await run.put_sticky("alice", "TS01")
        _at, fields = await run.connect("alice")
        assert (fields["server"], fields["reason"]) == ("TS01", "sticky-hit"), fields

        await farm[0].stop_listening()
        await poll("TS01 marked down", partial(health_is, "TS01", "down"))
        down = time.monotonic()
        await run.step(step)
        # within failover_after (real time) she is held: her session is on TS01
        decision = await run.explain("alice")
        assert decision["reason"] == "sticky-hit" and decision["servers"] == ["TS01"], decision
        assert "held until failover_after" in decision["detail"], decision
        assert await refused(run.port, "alice")
        assert time.monotonic() - down < FAILOVER_AFTER_S, "too slow to check the hold within failover_after"

        async def moved() -> bool:
            return bool((await run.explain("alice"))["reason"] == "failover")

        await poll("alice moved off TS01 after failover_after", moved)
        assert time.monotonic() - down >= FAILOVER_AFTER_S - 0.5, "moved before failover_after"
        _at, fields = await run.connect("alice")
        assert fields["reason"] == "failover" and fields["moved_from"] == "TS01", fields
        assert fields["server"] in {"TS02", "TS03"}
        assert (await run.get("/api/v1/sticky/alice"))["server"] == fields["server"]


# -- slow start ---------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [-STEP_S, STEP_S], ids=["back", "forward"])
async def test_a_slow_start_ramp_runs_in_real_time_whichever_way_the_clock_steps(
        tmp_path: Path, step: float) -> None:
    """Before: the ramp ran on the wall clock: a step back froze it at its start for 10 minutes
    (the server barely took new users), a step forward ended it at once (a logon storm on it)."""
    farm = await start_farm("TS01", "TS02")
    async with stepped_balancer(tmp_path, farm, health=FAST_CHECKS,
                                balancer_extra=f'slowstart = "{SLOWSTART_S:.0f}s"\n') as run:

        async def ts01() -> dict[str, Any]:
            return (await run.servers())["TS01"]

        async def health_is(server: str, state: str) -> bool:
            return bool((await run.servers())[server]["health"] == state)

        for s in farm:
            await poll(f"{s.name} up", partial(health_is, s.name, "up"))
        assert (await ts01())["slowstart"]["share"] is None  # a starting balancer ramps nothing
        await farm[0].stop_listening()
        await poll("TS01 marked down", partial(health_is, "TS01", "down"))
        await farm[0].listen_again()

        async def ramping() -> bool:
            server = await ts01()
            return server["health"] == "up" and server["slowstart"]["share"] is not None

        await poll("TS01 back, ramping", ramping)
        back = time.monotonic()
        await run.step(step)
        ramp = (await ts01())["slowstart"]
        elapsed = time.monotonic() - back
        assert ramp["share"] is not None, f"the ramp ended at the step: {ramp}"
        assert ramp["share"] < 0.5 and abs(ramp["left_s"] - (SLOWSTART_S - elapsed)) < 2, (ramp, elapsed)

        async def advanced() -> bool:
            left = (await ts01())["slowstart"]["left_s"]
            return left is not None and left <= SLOWSTART_S - 3

        await poll("the ramp advances in real time", advanced, timeout_s=10)
        assert time.monotonic() - back >= 3 - 1
        ramp = (await ts01())["slowstart"]
        assert ramp["share"] is not None and ramp["left_s"] > 0, ramp  # and goes on: 20 s in all
