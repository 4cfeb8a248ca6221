"""Graceful restart: SIGUSR2 makes a new process take the listeners while the old one finishes
its sessions. Real processes (`python -m rdpbalancer run`), real sockets, one SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from rdpbalancer.proto import build_connection_request
from rdpbalancer.store.sqlite import SqliteStickyStore
from tests.support.balancer import (
    BalancerProcess,
    farm_config,
    process_gone,
    reserved_port,
    wait_serving,
    wait_until,
)
from tests.support.fakes import WHO, FakeRdpServer, rdp_connect, read_tpkt, start_farm, where

WAIT_S = 20.0
PROBERS = 8  # clients connecting back to back, in parallel, across a handoff with workers
CHUNK = 4096


def _config(farm: list[FakeRdpServer], tmp_path: Path, port: int, admin_port: int) -> str:
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", listen=f"127.0.0.1:{port}")
    return text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{admin_port}"')


def _push_config(farm: list[FakeRdpServer], tmp_path: Path, port: int, admin_port: int) -> Path:
    """The config file of a farm whose hosts push their lists, each with the token `ts01-push-token-...`."""
    tokens = tmp_path / "push.toml"
    tokens.write_text("".join(f'{s.name} = "{s.name.lower()}-push-token-0123456789"\n' for s in farm))
    tokens.chmod(0o600)
    config = tmp_path / "rdpb.toml"
    config.write_text(_config(farm, tmp_path, port, admin_port)
                      + f'[sessions]\nsource = "push"\npush_tokens = "{tokens}"\n')
    return config


async def _api(admin_port: int, path: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin_port}{path}") as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def _serving_pid(admin_port: int) -> int | None:
    try:
        return int((await _api(admin_port, "/api/v1/workers"))["workers"][0]["pid"])
    except (aiohttp.ClientError, OSError):
        return None




@dataclass
class Farm:
    """Fake servers and the old process of a handoff, serving (and acting on its signals)."""

    farm: list[FakeRdpServer]
    config: Path
    log: Path
    old: BalancerProcess
    port: int  # the RDP listener's, read from the old process's start-up line (a handoff keeps it)
    admin_port: int
    new_pid: int | None = None  # the successor, stopped at the end (set it once known)

    @property
    def old_pid(self) -> int:
        assert self.old.proc is not None
        return self.old.proc.pid

    async def successor_serves(self) -> int:
        """Until the admin API answers from another process than the old one: its pid (new_pid)."""
        self.new_pid = await _wait_serving(self.admin_port, self.old_pid, self.log)
        return self.new_pid


@asynccontextmanager
async def _handoff_farm(tmp_path: Path, *servers: str,
                        config: Callable[[list[FakeRdpServer], int], str | Path] | None = None,
                        timeout_s: float = WAIT_S) -> AsyncIterator[Farm]:
    """`servers` (fake), and an old process on `config(farm, admin_port)` (the text of the config, or
    the path it was written to; default `_config`) listening on 127.0.0.1:0, once it serves. At the
    end: the old process, the successor (`new_pid`) and the servers are stopped."""
    farm = await start_farm(*servers)
    # a fixed admin port (the successor opens the one the config names, where the test looks),
    # held from here on so that no other socket takes it (the processes bind it all the same)
    with reserved_port() as admin_port:
        path, log = tmp_path / "rdpb.toml", tmp_path / "rdpb.log"
        text = (config or (lambda farm, admin_port: _config(farm, tmp_path, 0, admin_port)))(farm, admin_port)
        if isinstance(text, Path):
            path = text
        else:
            path.write_text(text)
        old = BalancerProcess(path, 0, log)
        handoff = None
        try:
            old.start(timeout_s)
            assert old.proc is not None
            await wait_serving(log, timeout_s)  # it accepts before it serves (and acts on SIGUSR2)
            handoff = Farm(farm, path, log, old, old.port, admin_port)
            yield handoff
        finally:
            old.stop()
            if handoff is not None:
                await _stop_pid(handoff.new_pid)
            for s in farm:
                await s.stop()


class Stream:
    """Numbered chunks through one session, each checked as it comes back (echo)."""

    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self.client, self.sent, self.checked, self.running = client, 0, 0, True

    async def run(self) -> None:
        while self.running:
            chunk = self.sent.to_bytes(8, "big") * (CHUNK // 8)
            self.client.writer.write(chunk)
            self.sent += 1
            back = await asyncio.wait_for(self.client.reader.readexactly(CHUNK), 10)
            assert back == self.checked.to_bytes(8, "big") * (CHUNK // 8), f"chunk {self.checked} lost or reordered"
            self.checked += 1
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_sessions_survive_a_handoff_and_the_old_process_leaves_after_the_last(
        tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    def config(farm: list[FakeRdpServer], admin_port: int) -> str:
        text = _config(farm, tmp_path, 0, admin_port)
        if store == "redis":  # the same, with the table in a real redis-server (and a SQLite copy)
            url = request.getfixturevalue("redis_server").url
            text = text.replace("[sticky]\n", '[sticky]\nstore = "redis"\n', 1)
            # Redis's timeout long enough for a loaded 2-core machine (a slower answer is an outage)
            text += f'\n[sticky.redis]\nurl = "{url}"\nkey_prefix = "handoff{os.getpid()}:"\ntimeout = "2s"\n'
        return text

    async with _handoff_farm(tmp_path, "TS01", "TS02", config=config) as h:
        old, port, admin_port, old_pid = h.old, h.port, h.admin_port, h.old_pid
        assert old.proc is not None
        alice_home = await where(port, "alice")
        streamer = await rdp_connect(port, "streamer")
        stream = Stream(streamer)
        streaming = asyncio.ensure_future(stream.run())
        await wait_until(lambda: stream.checked > 20, WAIT_S)

        old.proc.send_signal(signal.SIGUSR2)

        async def new_process_serves() -> bool:
            pid = await _serving_pid(admin_port)
            return pid is not None and pid != old_pid

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not await new_process_serves():
            assert asyncio.get_running_loop().time() < deadline, (tmp_path / "rdpb.log").read_text()[-3000:]
            await asyncio.sleep(0.05)
        new_pid = h.new_pid = await _serving_pid(admin_port)
        assert new_pid is not None
        checked_at_takeover = stream.checked
        # the new process routes: alice goes home, a new user is placed, all accepted by it
        assert await where(port, "alice") == alice_home
        bob = await rdp_connect(port, "bob")
        sessions = (await _api(admin_port, "/api/v1/sessions"))["sessions"]
        assert [s["user"] for s in sessions] == ["bob"], "the new process relays only what it accepted"
        # the old process's session still counts for leastconn in the new one
        servers = {s["name"]: s for s in (await _api(admin_port, "/api/v1/servers"))["servers"]}
        assert sum(s["connections"] for s in servers.values()) == 2
        # ... and keeps streaming through the old process, nothing lost or reordered
        await wait_until(lambda: stream.checked > checked_at_takeover + 50, WAIT_S)
        assert old.proc.poll() is None and not process_gone(old_pid)
        stream.running = False
        await streaming
        await streamer.close()
        await bob.close()
        assert await asyncio.to_thread(old.proc.wait, WAIT_S) == 0  # left after its last session
        old.proc = None
        servers = {s["name"]: s for s in (await _api(admin_port, "/api/v1/servers"))["servers"]}
        assert sum(s["connections"] for s in servers.values()) == 0
        assert await where(port, "alice") == alice_home


async def test_a_successor_that_cannot_start_leaves_the_old_process_serving(tmp_path: Path) -> None:
    async with _handoff_farm(tmp_path, "TS01") as h:
        old, config, port, admin_port = h.old, h.config, h.port, h.admin_port
        assert old.proc is not None
        log = h.log
        config.write_text(config.read_text() + "\n[nonsense]\n")
        old.proc.send_signal(signal.SIGUSR2)
        await wait_until(lambda: "handoff failed" in log.read_text(), WAIT_S)
        assert "nonsense" in log.read_text()  # the successor's own error is in the same log
        assert await _serving_pid(admin_port) == old.proc.pid
        assert await where(port, "alice") == "TS01"


async def test_a_successor_that_dies_while_taking_over_hands_the_listeners_back(tmp_path: Path) -> None:
    async with _handoff_farm(tmp_path, "TS01") as h:
        old, config, port, admin_port = h.old, h.config, h.port, h.admin_port
        assert old.proc is not None
        log = h.log
        held = await rdp_connect(port, "held")
        with socket.socket() as taken:  # the successor loads fine, then cannot open its admin port
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config.write_text(config.read_text().replace(f"127.0.0.1:{admin_port}",
                                                         f"127.0.0.1:{taken.getsockname()[1]}"))
            old.proc.send_signal(signal.SIGUSR2)
            await wait_until(lambda: "handoff failed: the new process failed while taking over" in log.read_text(),
                             WAIT_S)
        assert await _serving_pid(admin_port) == old.proc.pid  # its API is back
        assert await where(port, "alice") == "TS01"  # and it accepts on the same socket
        held.writer.write(b"still here")
        assert await asyncio.wait_for(held.reader.readexactly(10), 5) == b"still here"
        await held.close()


async def test_no_connection_is_refused_across_a_handoff(tmp_path: Path) -> None:
    """Clients connect back to back while the listeners change process: every one is served."""
    async with _handoff_farm(tmp_path, "TS01") as h:
        old, port, admin_port = h.old, h.port, h.admin_port
        assert old.proc is not None
        old_pid = old.proc.pid
        outcomes: list[str] = []
        probing = True

        async def probe() -> None:
            i = 0
            while probing and i < 5000:  # bounded
                i += 1
                try:
                    outcomes.append(await where(port, f"probe{i % 50}"))
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    outcomes.append(f"failed: {exc!r}")
                await asyncio.sleep(0.005)

        prober = asyncio.ensure_future(probe())
        await wait_until(lambda: len(outcomes) > 20, WAIT_S)
        before = len(outcomes)
        old.proc.send_signal(signal.SIGUSR2)
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while (pid := await _serving_pid(admin_port)) in (None, old_pid):
            assert asyncio.get_running_loop().time() < deadline, (tmp_path / "rdpb.log").read_text()[-3000:]
            await asyncio.sleep(0.05)
        taken_over = len(outcomes)
        await wait_until(lambda: len(outcomes) > taken_over + 20, WAIT_S)
        probing = False
        await prober
        failed = [o for o in outcomes if o != "TS01"]
        assert not failed, f"{len(failed)} of {len(outcomes)} connections failed across the handoff: {failed[:3]}"
        assert taken_over > before  # some were served while the handoff ran
        assert await asyncio.to_thread(old.proc.wait, WAIT_S) == 0  # no session left: the old one exits
        old.proc = None
        servers = (await _api(admin_port, "/api/v1/servers"))["servers"]
        assert sum(s["connections"] for s in servers) == 0  # every old session's start and end were told
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        await wait_until(lambda: process_gone(pid), WAIT_S)


async def test_a_handoff_with_workers_keeps_every_session_and_refuses_no_connection(tmp_path: Path) -> None:
    """workers = 2 on both sides: sessions relayed by the old primary and by its worker keep
    streaming, clients connecting back to back meanwhile are all served, and the new process
    runs its own worker."""
    new_pids: list[int] = []
    streams: list[Stream] = []
    running: list[asyncio.Future[None]] = []
    async with _handoff_farm(tmp_path, "TS01", "TS02", config=lambda farm, admin_port:
            _config(farm, tmp_path, 0, admin_port).replace("[balancer]\n", "[balancer]\nworkers = 2\n", 1)) as h:
        # serving: its worker too (the primary starts serving once the worker is ready)
        old, port, admin_port, old_pid, log = h.old, h.port, h.admin_port, h.old_pid, h.log
        assert old.proc is not None
        try:
            old_workers = {w["pid"] for w in (await _api(admin_port, "/api/v1/workers"))["workers"]}
            relayed_by: set[int] = set()
            for i in range(20):  # until both processes relay some (each connection: one or the other)
                stream = Stream(await rdp_connect(port, f"streamer{i}"))
                streams.append(stream)
                running.append(asyncio.ensure_future(stream.run()))
                await wait_until(lambda stream=stream: stream.checked > 5, WAIT_S)  # type: ignore[misc]
                relayed_by = {s["worker"] for s in (await _api(admin_port, "/api/v1/sessions"))["sessions"]}
                if relayed_by == {0, 1} and i >= 3:
                    break
            assert relayed_by == {0, 1}, "no session went through the worker in 20 tries"

            outcomes: list[str] = []
            probing = True

            async def probe() -> None:
                i = 0
                while probing and i < 5000:
                    i += 1
                    try:
                        outcomes.append(await where(port, "prober"))
                    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        outcomes.append(f"failed: {exc!r}")
                    await asyncio.sleep(0.005)

            probers = [asyncio.ensure_future(probe()) for _ in range(PROBERS)]
            await wait_until(lambda: len(outcomes) > 10, WAIT_S)
            old.proc.send_signal(signal.SIGUSR2)
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while await _serving_pid(admin_port) in (None, old_pid):
                assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.05)
            workers = (await _api(admin_port, "/api/v1/workers"))["workers"]
            new_pids.extend(w["pid"] for w in workers)
            h.new_pid = new_pids[0]  # the new primary; its worker exits with it
            assert len(workers) == 2 and all(w["alive"] for w in workers) and not set(new_pids) & old_workers, workers
            # farm simulator: uvloop's spawn left copies of stdin/out/err in each child, so the
            # descriptors grew by three with every handoff (and the worker took them along)
            for pid in [old_pid, *old_workers, *new_pids]:
                assert _stdio_copies(pid, log) == [], (pid, _stdio_copies(pid, log))
            at_takeover = [s.checked for s in streams]
            taken_over = len(outcomes)
            await wait_until(lambda: len(outcomes) > taken_over + 30, WAIT_S)
            await wait_until(lambda: all(s.checked > c + 30 for s, c in zip(streams, at_takeover, strict=True)), WAIT_S)
            probing = False
            await asyncio.gather(*probers)
            failed = [o for o in outcomes if o.startswith("failed")]
            assert not failed, f"{len(failed)} of {len(outcomes)} connections failed across the handoff: {failed[:3]}"
            assert "cannot steer" not in log.read_text()
            assert len(set(outcomes)) == 1  # "prober" stayed on one server, through both generations
            for stream in streams:
                stream.running = False
            await asyncio.gather(*running)
            for stream in streams:
                await stream.client.close()
            assert await asyncio.to_thread(old.proc.wait, WAIT_S) == 0  # after its (and its worker's) last session
            old.proc = None
            await wait_until(lambda: all(process_gone(p) for p in old_workers), WAIT_S)
            servers = (await _api(admin_port, "/api/v1/servers"))["servers"]
            sessions = (await _api(admin_port, "/api/v1/sessions"))["sessions"]
            assert sum(s["connections"] for s in servers) == 0, (servers, sessions)
        finally:
            for task in running:
                task.cancel()
            old.stop()
            await _stop_pid(h.new_pid)
            await wait_until(lambda: all(process_gone(p) for p in new_pids), WAIT_S)


# -- regressions: what an old process accepted, routed or changed reaches the new one ---------------

async def _wait_serving(admin_port: int, old_pid: int, log: Path) -> int:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (pid := await _serving_pid(admin_port)) in (None, old_pid):
        assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.05)
    assert pid is not None
    return pid


async def _stop_pid(pid: int | None) -> None:
    if pid is not None and not process_gone(pid):
        os.kill(pid, signal.SIGTERM)
        await wait_until(lambda: process_gone(pid), WAIT_S)


async def _api_call(admin_port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{admin_port}{path}", json=body,
            headers={"Authorization": f"Bearer {HANDOFF_TOKEN}"}) as resp:
        return resp.status, await resp.json()


HANDOFF_TOKEN = "handoff-test-token-0123456789"


def _config_with_token(farm: list[FakeRdpServer], tmp_path: Path, port: int, admin_port: int, extra: str = "") -> str:
    token = tmp_path / "admin.token"
    token.write_text(HANDOFF_TOKEN)
    token.chmod(0o600)
    text = _config(farm, tmp_path, port, admin_port).replace("[admin]\n", f'[admin]\ntoken_file = "{token}"\n', 1)
    return text.replace("[balancer]\n", f"[balancer]\n{extra}", 1)


async def test_with_workers_connections_accepted_before_the_handoff_are_all_served(tmp_path: Path) -> None:
    """workers = 2, nothing relaying: clients connected to the old processes send their CR only
    after SIGUSR2. They were all cut (the old primary saw no session and exited at once)."""
    waiting: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    async with _handoff_farm(tmp_path, "TS01", config=lambda farm, admin_port:
            _config_with_token(farm, tmp_path, 0, admin_port, "workers = 2\n").replace(
                'handshake_timeout = "1s"', 'handshake_timeout = "30s"')) as h:
        old, port, log = h.old, h.port, h.log
        assert old.proc is not None
        try:
            # connections the old *worker* accepted (the kernel spreads them over both processes);
            # those of the primary are closed: its own pending sessions would hide the fault
            for _ in range(40):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                local_port = writer.get_extra_info("sockname")[1]
                await wait_until(lambda lp=local_port: _accepted_by(lp, port) is not None, WAIT_S)  # type: ignore[misc]
                if _accepted_by(local_port, port) == old.proc.pid:
                    writer.transport.abort()
                else:
                    waiting.append((reader, writer))
                if len(waiting) == 4:
                    break
            assert len(waiting) == 4, "the kernel gave the worker no connection in 40"
            old.proc.send_signal(signal.SIGUSR2)
            await h.successor_serves()
            await wait_until(lambda: "accepts new connections now" in log.read_text(), WAIT_S)
            # Not a synchronisation: a faulty old primary (one that ignored its worker's connections)
            # exits at its drain's first look; this gives it the time to. A correct one stays however
            # long this lasts (its worker holds connections for the 30 s handshake timeout).
            await asyncio.sleep(0.5)
            assert old.proc.poll() is None, "the old primary left while its worker held connections"
            served = 0
            for i, (reader, writer) in enumerate(waiting):  # each must be served by the old worker
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, RuntimeError):
                    writer.write(build_connection_request(cookie=f"early{i}".encode()))
                    await asyncio.wait_for(read_tpkt(reader), 10)  # the Connection Confirm
                    writer.write(b"still there?")
                    served += await asyncio.wait_for(reader.readexactly(12), 10) == b"still there?"
            assert served == len(waiting), f"only {served} of {len(waiting)} accepted connections were served"
        finally:
            for _reader, writer in waiting:
                writer.close()


async def test_an_old_process_that_dies_releases_its_sessions_in_the_new_one(tmp_path: Path) -> None:
    """kill -9 of the draining old process: its sessions are gone, so the new process's
    connection counts and the users' active marks must drop (they stayed up for good)."""
    held = []
    async with _handoff_farm(tmp_path, "TS01", "TS02", config=lambda farm, admin_port:
            _config_with_token(farm, tmp_path, 0, admin_port)) as h:
        old, port, admin_port = h.old, h.port, h.admin_port
        assert old.proc is not None
        try:
            held = [await rdp_connect(port, f"user{i}") for i in range(6)]
            old.proc.send_signal(signal.SIGUSR2)
            await h.successor_serves()
            servers = (await _api(admin_port, "/api/v1/servers"))["servers"]
            assert sum(s["connections"] for s in servers) == 6  # counted while the old process relays them
            old.proc.send_signal(signal.SIGKILL)
            old.proc.wait(10)
            old.proc = None

            async def released() -> bool:
                servers = (await _api(admin_port, "/api/v1/servers"))["servers"]
                return sum(s["connections"] for s in servers) == 0
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while not await released():
                assert asyncio.get_running_loop().time() < deadline, "the dead process's sessions are still counted"
                await asyncio.sleep(0.05)
            status, entry = await _api_call(admin_port, "GET", "/api/v1/sticky/user0")
            assert status == 200 and entry["active_sessions"] == 0
        finally:
            for client in held:
                client.writer.transport.abort()


def _accepted_by(client_port: int, server_port: int) -> int | None:
    """The pid holding the server side of the loopback connection from `client_port`."""
    query = f"( sport = :{server_port} and dport = :{client_port} )"
    out = subprocess.run(["ss", "-tnpH", "state", "established", query], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    for line in out.splitlines():
        if "pid=" in line:
            return int(line.split("pid=", 1)[1].split(",", 1)[0])
    return None


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if fd.readlink() == path:
                return True
        except OSError:
            continue
    return False


SLICE_S = 0.003  # how long a stepped process runs between two looks at it


def _stdio_copies(pid: int, log: Path) -> list[str]:
    """The descriptors of `pid` beyond 0, 1 and 2 that point at its stdout (the log) or /dev/null."""
    copies = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if int(fd) > 2 and target in (str(log), os.devnull) and os.lstat(f"/proc/{pid}/fd/{fd}").st_mode & 0o200:
                copies.append(f"{fd} -> {target}")
    return copies


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, T stopped, Z zombie, ...); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None


def _stop(pid: int) -> None:
    """SIGSTOP, then wait until the process is stopped (kill() only sends the signal)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + WAIT_S
    while (state := _state(pid)) != "T":
        assert state not in (None, "Z"), f"pid {pid} exited"
        assert time.monotonic() < deadline, f"pid {pid} did not stop in {WAIT_S:g}s (state {state})"
        time.sleep(0.001)


def _hold_after_its_read(pid: int, db: Path, log: Path) -> None:
    """Leave a handoff's new process `pid` stopped after it read the sticky file and before it
    has built its table from the rows (so before it asks the old process for the listeners).
    It runs in slices of a few milliseconds and is looked at only while stopped, so no state is
    missed however loaded the machine: its connection to the file, open, then closed again, and
    its "entries loaded" line, which it logs once the table is built (the read and the build take
    a second or so of CPU with the preloaded rows: many slices each)."""
    seen_open = False
    deadline = time.monotonic() + 120
    _stop(pid)
    for _ in range(200_000):  # bounded; the deadline comes first
        assert log.read_text().count(" entries loaded") == 1, \
            "the new process built its table before it could be held (a slice ran through the whole read)"
        if _has_open(pid, db):
            seen_open = True
        elif seen_open:
            return  # stopped between the two
        assert time.monotonic() < deadline, f"the new process did not read {db} in 120s"
        os.kill(pid, signal.SIGCONT)
        time.sleep(SLICE_S)
        _stop(pid)
    raise AssertionError("the new process was not held after its read in 200,000 slices")


def _preload(db: Path, count: int, servers: tuple[str, ...]) -> None:
    """A large sticky file, so the new process's load takes a moment."""
    SqliteStickyStore(db).load()  # creates the schema
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO sticky(key, pool, server, created, last_used) VALUES (?, ?, ?, ?, ?)",
                         ((f"filler{i}", "default", servers[i % len(servers)], now, now) for i in range(count)))
        conn.executemany("INSERT INTO sticky(key, pool, server, created, last_used) VALUES (?, ?, ?, ?, ?)",
                         [("alice", "default", "TS01", now, now), ("bob", "default", "TS02", now, now)])


async def test_deletions_made_while_the_new_process_loads_stay_deleted(tmp_path: Path) -> None:
    """DELETE alice and a flush of bob's server on the old process while the new one reads the
    table: the rows left the file, yet the new process sent alice to her old server and wrote
    her back. The new process is held stopped in that moment (after its read, before it built
    its table and asked for the listeners) while the old one deletes."""
    _preload(tmp_path / "s.db", 300_000, ("TS02", "TS03"))
    successor: int | None = None
    async with _handoff_farm(tmp_path, "TS01", "TS02", "TS03", config=lambda farm, admin_port:
            _config_with_token(farm, tmp_path, 0, admin_port).replace(
                "[sticky]\n", "[sticky]\nmax_entries = 1000000\n", 1), timeout_s=60) as h:
        old, admin_port, log = h.old, h.admin_port, h.log
        assert old.proc is not None
        try:
            old.proc.send_signal(signal.SIGUSR2)
            await wait_until(lambda: "handoff: new process pid" in log.read_text(), WAIT_S, 0.002)
            successor = h.new_pid = int(log.read_text().split("handoff: new process pid ", 1)[1].split()[0])
            await asyncio.to_thread(_hold_after_its_read, successor, tmp_path / "s.db", log)
            assert (await _api_call(admin_port, "DELETE", "/api/v1/sticky/alice"))[0] == 200
            status, flushed = await _api_call(admin_port, "POST", "/api/v1/sticky/flush", {"server": "TS02"})
            assert status == 200 and flushed["deleted"] > 0
            assert "took over the listeners" not in log.read_text(), "the new process serves: it was not held"
            os.kill(successor, signal.SIGCONT)
            new_pid = await h.successor_serves()
            assert new_pid == successor
            assert (await _api_call(admin_port, "GET", "/api/v1/sticky/alice"))[0] == 404
            assert (await _api_call(admin_port, "GET", "/api/v1/sticky/bob"))[0] == 404
            assert (await _api_call(admin_port, "GET", "/api/v1/sticky?server=TS02&limit=0"))[1]["total"] == 0
        finally:
            if successor is not None and not process_gone(successor):
                os.kill(successor, signal.SIGCONT)  # held stopped when the test failed meanwhile


async def test_a_user_placed_by_the_old_process_after_the_takeover_is_known_to_the_new_one(tmp_path: Path) -> None:
    """A connection accepted by the old process sends its CR after the handoff: the old process
    places the new user. The new process answered 404 for them, and their next connection
    landed elsewhere, starting a second session."""
    async with _handoff_farm(tmp_path, "TS01", "TS02", config=lambda farm, admin_port:
            _config_with_token(farm, tmp_path, 0, admin_port).replace(
                'handshake_timeout = "1s"', 'handshake_timeout = "30s"')) as h:
        old, port, admin_port = h.old, h.port, h.admin_port
        assert old.proc is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        local_port, old_pid = writer.get_extra_info("sockname")[1], old.proc.pid
        # accepted by the old process, not merely queued on the socket the new one takes over
        await wait_until(lambda: _accepted_by(local_port, port) == old_pid, WAIT_S, 0.05,
                         describe=lambda: f"held by pid {_accepted_by(local_port, port)}, not {old_pid}")
        old.proc.send_signal(signal.SIGUSR2)
        await h.successor_serves()
        writer.write(build_connection_request(cookie=b"late0"))
        await asyncio.wait_for(reader.read(1024), 10)
        writer.write(WHO)
        placed = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:  # the old process tells the new one as it writes
            status, entry = await _api_call(admin_port, "GET", "/api/v1/sticky/late0")
            if status == 200 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == 200, f"the new process does not know late0 after {WAIT_S:g}s: {status} {entry}"
        assert entry["server"] == placed
        # the first session still runs (in the old process): leastconn alone would pick the other server
        assert await where(port, "late0") == placed
        writer.close()


async def test_the_session_directory_is_handed_over(tmp_path: Path) -> None:
    """The hosts' lists the old process holds are evidence in the new one at once, not only after
    each host's next push: a returning user is routed by their session across the handoff."""
    async with _handoff_farm(tmp_path, "TS01", "TS02", config=lambda farm, admin_port:
            _push_config(farm, tmp_path, 0, admin_port)) as h:
        old, port, admin_port, log = h.old, h.port, h.admin_port, h.log
        assert old.proc is not None
        async with aiohttp.ClientSession() as http:
            for server in ("TS01", "TS02"):
                body = {"sessions": [{"user": "hanna", "state": "disconnected"}] if server == "TS02" else []}
                async with http.put(f"http://127.0.0.1:{admin_port}/api/v1/hosts/{server}/sessions", json=body,
                                    headers={"Authorization": f"Bearer {server.lower()}-push-token-0123456789"}) as r:
                    assert r.status == 200
        old.proc.send_signal(signal.SIGUSR2)
        await h.successor_serves()
        hosts = {h["server"]: h for h in (await _api(admin_port, "/api/v1/hosts"))["hosts"]}
        assert hosts["TS02"]["sessions"] == 1 and hosts["TS02"]["fresh"]
        assert await where(port, "hanna") == "TS02"
        assert "reason=session" in log.read_text().split("took over the listeners")[-1]


async def test_a_slow_start_ramp_under_way_goes_on_in_the_new_process(tmp_path: Path) -> None:
    """A server added by a reload ramps; the process that takes over by handoff goes on with the
    same ramp (a process starting afresh would ramp nobody)."""
    both = ""

    def without_ts02(farm: list[FakeRdpServer], admin_port: int) -> str:
        nonlocal both
        both = _config(farm, tmp_path, 0, admin_port).replace("[balancer]\n", '[balancer]\nslowstart = "10m"\n')
        row = f'  {{ name = "TS02", address = "{farm[1].address}", weight = 1 }}'
        assert row in both
        return both.replace(row, "")

    async with _handoff_farm(tmp_path, "TS01", "TS02", config=without_ts02) as h:
        old, config, admin_port, log = h.old, h.config, h.admin_port, h.log
        assert old.proc is not None
        config.write_text(both)  # TS02 is added: it ramps
        old.proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: "server TS02 takes new users gradually: slow start over 10m" in log.read_text(),
                         WAIT_S)
        before = {s["name"]: s for s in (await _api(admin_port, "/api/v1/servers"))["servers"]}
        assert before["TS02"]["slowstart"]["share"] == 0.05 and before["TS01"]["slowstart"]["share"] is None
        old.proc.send_signal(signal.SIGUSR2)
        await h.successor_serves()
        after = {s["name"]: s for s in (await _api(admin_port, "/api/v1/servers"))["servers"]}
        ramp = after["TS02"]["slowstart"]
        assert ramp["share"] == 0.05 and ramp["left_s"] <= before["TS02"]["slowstart"]["left_s"], ramp
        assert after["TS01"]["slowstart"]["share"] is None


async def test_a_user_placed_just_before_a_handoff_stays_with_her_logon_in_the_new_process(tmp_path: Path) -> None:
    """Issue 24, item 2: the new process has the hosts' lists and the table, not the old one's
    placements. ines is placed on a host by the old process a moment before the handoff; her
    logon is under way (not listed yet). Every host answers the new process without her, and the
    hosts have shown her name before (she logged off from another host earlier): her next
    connection must still go to the host of her logon, by her entry's own last use."""

    async def push_all(lists: dict[str, list[str]]) -> None:
        async with aiohttp.ClientSession() as http:
            for s in farm:
                body = {"sessions": [{"user": u, "state": "disconnected"} for u in lists.get(s.name, [])]}
                async with http.put(f"http://127.0.0.1:{admin_port}/api/v1/hosts/{s.name}/sessions", json=body,
                                    headers={"Authorization": f"Bearer {s.name.lower()}-push-token-0123456789"}) as r:
                    assert r.status == 200

    async with _handoff_farm(tmp_path, "TS01", "TS02", "TS03", config=lambda farm, admin_port:
            _push_config(farm, tmp_path, 0, admin_port)) as h:
        old, port, admin_port, log, farm = h.old, h.port, h.admin_port, h.log, h.farm
        assert old.proc is not None
        await push_all({})
        home = await where(port, "ines")  # placed; her client goes on with the logon
        busy = await rdp_connect(port, "olga")  # her home is not the least loaded any more
        if busy.server != home:
            await busy.close()
            busy = await rdp_connect(port, "olga2")
        old.proc.send_signal(signal.SIGUSR2)
        await h.successor_serves()
        other = next(s.name for s in farm if s.name != home)
        await push_all({other: ["ines"]})  # the hosts spelt her name once (an old session, since logged off)
        await push_all({})  # every host answered the new process after her placement, without her
        assert await where(port, "ines") == home
        after = log.read_text().split("took over the listeners")[-1]
        assert "reason=no-session" not in after, after
        await busy.close()


