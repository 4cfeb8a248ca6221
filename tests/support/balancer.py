"""Run the balancer in-process (same event loop as the test) or as a subprocess."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.clock import PROCESS_CLOCK
from rdpbalancer.config import parse_config

# Every test client connects from one loopback address, thousands a second: the per-source
# defaults would (rightly) refuse that. The tests of the limits themselves pass their own.
LOAD_TEST_LIMITS = "per_source_connections = 100000\nper_source_rate = 1000000\nper_source_burst = 100000\n" \
                   "new_users_per_source = 1000000\nmax_handshakes = 100000\nmax_connections = 100000"


def farm_config(servers: list[tuple[str, str, int]], sticky_path: Path, *, listen: str = "127.0.0.1:0",
                extra: str = "", balancer_extra: str = "", balance: str = "leastconn",
                health: str = 'check = "none"', limits: str = LOAD_TEST_LIMITS) -> str:
    """A config for tests. Health checks are off unless `health` says otherwise, so tests of
    routing do not depend on probe timing (the health tests turn them on)."""
    rows = ",\n".join(f'  {{ name = "{n}", address = "{a}", weight = {w} }}' for n, a, w in servers)
    return f"""
[balancer]
listen = ["{listen}"]
handshake_timeout = "1s"
connect_timeout = "2s"
{balancer_extra}
[sticky]
path = "{sticky_path}"
ttl = "8h"
sync = "normal"
[health]
{health}
[limits]
{limits}
[admin]
listen = "127.0.0.1:0"
{extra}
[[pool]]
name = "default"
balance = "{balance}"
servers = [
{rows}
]
"""


def advance_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the process clock forward by `seconds`, in place of sleeping them: an in-process
    balancer reads every TTL, logon grace, list age and time down from `rdpbalancer.clock.now`
    (its routing, the session directory, the health monitor, the admin API), which is the wall
    clock at start plus the monotonic time since: the offset moves, the monotonic clock (the
    event loop's timers, handshake deadlines) does not. Put back after the test."""
    monkeypatch.setattr(PROCESS_CLOCK, "offset", PROCESS_CLOCK.offset + seconds)


@asynccontextmanager
async def running(config_text: str) -> AsyncIterator[Balancer]:
    bal = Balancer(parse_config(config_text))
    await bal.start()
    try:
        yield bal
    finally:
        await bal.stop()


@contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port where a connect is refused while the block runs: bound and not listening, so no
    other process can take it meanwhile (a port reserved and closed again can be)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as held:
        held.bind((host, 0))
        yield int(held.getsockname()[1])


def hold_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket holding a port to write in a config before a server binds it: for a server that
    cannot listen on port 0 and say which port it took (redis-server, haproxy), or a test whose
    subject is the fixed address itself. Bound with SO_REUSEADDR, not listening, until closed:
    no port-0 bind and no outgoing connection takes the port meanwhile (a port bound and closed
    again can be taken: a race), while a server setting SO_REUSEADDR itself (the
    balancer, its admin API, redis-server, haproxy) binds and listens on it all the same. A
    connect to it is refused while no server listens there."""
    held = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind((host, 0))
    except BaseException:
        held.close()
        raise
    return held


@contextmanager
def reserved_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port held (`hold_port`) while the block runs."""
    with hold_port(host) as held:
        yield int(held.getsockname()[1])


class BalancerProcess:
    """`python -m rdpbalancer run -c FILE` as a child process, stopped by PID only.

    `port` 0: the config listens on port 0 and each `start()` reads the port the child took from
    its start-up line (nothing reserved beforehand, so nothing another process can take meanwhile),
    and the admin API's port (`admin_port`) from the line before it; `start()` then returns once
    the child serves, not merely accepts. With `admin_socket` (the config's [admin] unix_socket)
    and port 0, the port is read from the admin API over that socket instead: for a config that
    logs at "warning", where no start-up line is written."""

    def __init__(self, config_path: Path, port: int, log_path: Path, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1", program: list[str] | None = None, cwd: Path | None = None,
                 admin_socket: Path | None = None) -> None:
        self.config_path, self.port, self.log_path, self.host = config_path, port, log_path, host
        self.env = env or {}
        self.program = program or [sys.executable, "-m", "rdpbalancer"]  # or an installed `rdpbalancer`
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.port_from_log = port == 0
        self.admin_socket = admin_socket
        self.admin_port: int | None = None  # from the admin API's line (port 0 too), when `port` is 0

    def start(self, timeout_s: float = 15.0) -> None:
        log = self.log_path.open("ab")
        logged_before = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [*self.program, "run", "-c", str(self.config_path)], cwd=self.cwd,
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        if self.port_from_log and self.admin_socket is not None:
            self.port = wait_for_admin_socket(self.proc, self.admin_socket, self.log_path, timeout_s)
        elif self.port_from_log:
            self.port = wait_for_listen_line(self.proc, self.log_path, logged_before, timeout_s)
            self.admin_port = admin_port_logged(self.log_path, logged_before)
        else:
            wait_for_listener(self.proc, (self.host, self.port), self.log_path, timeout_s)

    def signal(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self.proc = None
        return code

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


async def wait_until(predicate, timeout_s: float = 5.0, interval_s: float = 0.01,  # type: ignore[no-untyped-def]
                     describe=None) -> None:
    """Until `predicate()`; TimeoutError after `timeout_s`, saying `describe()` when given."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not reached in {timeout_s:g}s"
                               + (f": {describe()}" if describe is not None else ""))
        await asyncio.sleep(interval_s)


# The start-up line of a serving process: "rdpbalancer VERSION listening on ADDRESSES; pools: ..."
# ("stopped listening on", logged when a reload removes an address, does not match).
SERVING_LINE = re.compile(r"rdpbalancer \S+ listening on ")


async def wait_serving(log_path: Path, timeout_s: float = 15.0, count: int = 1) -> None:
    """Until `count` balancer processes logging to `log_path` serve and act on their signals (2:
    a handoff's successor too). `Balancer.run()` installs its signal handlers before it starts;
    `start()` ends with the "listening on" line, and `run()` marks the process serving in the same
    step of the event loop: from that line on, SIGHUP and SIGUSR2 are acted on (not refused as
    "received while starting") and SIGTERM stops it."""
    await wait_until(lambda: len(SERVING_LINE.findall(log_path.read_text())) >= count, timeout_s, 0.02,
                     describe=lambda: f"no {count} start-up line(s) in {log_path}:\n{log_path.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child we started (by its PID), SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_listener(proc: subprocess.Popen[bytes], address: tuple[str, int], log_path: Path,
                      timeout_s: float) -> None:
    """Until `proc` accepts on `address`; its log in the error when it exits or never listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        with socket.socket() as s:
            if s.connect_ex(address) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args[0]} did not listen on {address}:\n{log_path.read_text()[-4000:]}")


# "rdpbalancer VERSION listening on 127.0.0.1:PORT, [::1]:PORT; pools: ...": the first address's port
LISTEN_PORT = re.compile(r"rdpbalancer \S+ listening on \S*?:(\d+)[,;]")


def wait_for_listen_line(proc: subprocess.Popen[bytes], log_path: Path, offset: int, timeout_s: float) -> int:
    """The port of the first listener `proc` logs in its start-up line, written after `offset` in
    its log; its log in the error when it exits or does not serve in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with log_path.open("rb") as log:
            log.seek(offset)
            found = LISTEN_PORT.search(log.read().decode(errors="replace"))
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args[0]} logged no start-up line in {timeout_s:g}s:\n{log_path.read_text()[-4000:]}")


def unix_get(path: Path, target: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """GET `target` from the HTTP server on the Unix socket `path`: (status, body)."""
    conn = http.client.HTTPConnection("localhost", timeout=timeout_s)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        conn.sock = sock
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
        sock.close()


def wait_for_admin_socket(proc: subprocess.Popen[bytes], path: Path, log_path: Path, timeout_s: float) -> int:
    """The port of the first listener of `proc`, read from its admin API on the Unix socket `path`
    once it answers (the API starts after the listeners); its log in the error otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            status, body = unix_get(path, "/api/v1/config")
        except OSError:
            time.sleep(0.02)
            continue
        assert status == 200, body
        return int(json.loads(body)["listen"][0].rsplit(":", 1)[1])
    raise TimeoutError(f"{proc.args[0]}: no admin API on {path} in {timeout_s:g}s:\n{log_path.read_text()[-4000:]}")


# "admin API on http://127.0.0.1:PORT", logged before the start-up line once the admin API listens
ADMIN_PORT = re.compile(r"admin API on http://\S*?:(\d+)\s")


def admin_port_logged(log_path: Path, offset: int = 0) -> int | None:
    """The port of the admin API logged after `offset` (the last one: a restart logs it again)."""
    with log_path.open("rb") as log:
        log.seek(offset)
        found = ADMIN_PORT.findall(log.read().decode(errors="replace"))
    return int(found[-1]) if found else None


def process_gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped runs no code and holds no socket: gone too)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def wait_for_api(admin_port: int, timeout_s: float = 15.0) -> None:
    """Until the admin API answers (it starts just after the RDP listeners)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", admin_port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


def stored(db: Path) -> dict[str, str]:
    """user -> server as the sticky file holds it, opened read-only (the balancer may run)."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, server FROM sticky").fetchall())
    finally:
        conn.close()
