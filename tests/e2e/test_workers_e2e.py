"""End-to-end: ``[balancer] workers = 2`` with real xfreerdp clients and three real xrdp servers.

The balancer runs as a primary process plus one worker process; both listen on the same port with
SO_REUSEPORT and the kernel picks one per connection (by a hash of the addresses and ports), so
which process relays a given client is chance. Routing, the sticky table and the connection counts
live in the primary only: whichever process relays a client, placement must be the same as with one
process. Which process relayed a session comes from the primary's admin API (GET /api/v1/sessions,
field ``worker``: 0 the primary, 1 the worker); which server a client reached comes from that
server's own log (see tests/e2e/harness.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e import harness
from tests.support.balancer import process_gone

pytestmark = pytest.mark.e2e

T = TypeVar("T")

PASSWORD = "secret"
PRIMARY, WORKER = 0, 1  # the ``worker`` field of a session in the admin API
# New users are connected in batches of one per server, held open, until both processes have relayed
# some (at least MIN_BATCHES, at most MAX_BATCHES): each connection goes to either process with
# probability about 1/2, so 12 miss one process with probability 2 / 2**12.
MIN_BATCHES = 2
MAX_BATCHES = 4
# Every user then logs on again (all at once, their first connections closed) until at least one of
# them comes back through the other process than the first time; with 6 users or more, one round
# fails that with probability 2**-6 or less.
MAX_RETURN_ROUNDS = 3
API_TIMEOUT_S = 10.0  # for the primary's view to catch up with what the xrdp logs already show
WORKER_EXIT_TIMEOUT_S = 10.0

RunClients = Callable[..., list[harness.ClientResult]]


@dataclass
class WorkerBalancer:
    balancer: harness.BalancerProcess
    admin_port: int
    worker_pid: int

    def api(self, what: str) -> Any:
        url = f"http://{harness.LOCALHOST}:{self.admin_port}/api/v1/{what}"
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return json.load(response)

    def relaying(self) -> list[dict[str, Any]]:
        """The sessions the primary knows to be relaying, its own and its worker's."""
        return [s for s in self.api("sessions")["sessions"] if s["state"] == "relay"]

    def ensure_running(self) -> None:
        process = self.balancer.process
        assert process is not None
        process.ensure_running()

    def diagnostics(self) -> str:
        return f"balancer log ({self.balancer.log_path}):\n{self.balancer.log_tail(60)}"


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise harness.HarnessError(f"balancer config from the harness: expected {old!r} exactly once:\n{text}")
    return text.replace(old, new)


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, ...


def _is_our_worker(pid: int) -> bool:
    """``pid`` still runs ``python -m rdpbalancer worker ...`` (and is not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return b"rdpbalancer" in argv and b"worker" in argv




def _start(workdir: Path, servers: Sequence[harness.XrdpServer]) -> tuple[harness.BalancerProcess, int]:
    """The harness's balancer configuration plus ``workers = 2`` and an admin port we know."""
    balancer = harness.make_balancer(workdir, servers, start=False)
    admin_port = harness.held_port()
    text = balancer.config_path.read_text()
    text = _replace_once(text, "[balancer]\n", "[balancer]\nworkers = 2\n")
    text = _replace_once(text, 'listen = "127.0.0.1:0"', f'listen = "{harness.LOCALHOST}:{admin_port}"')
    balancer.config_path.write_text(text)
    balancer.start()
    return balancer, admin_port


def _wait_ready(balancer: harness.BalancerProcess, process: harness.ManagedProcess) -> None:
    """The primary logs "listening on" once its worker is ready (listening too)."""

    def probe() -> bool | None:
        return True if any("listening on" in line for line in harness.complete_lines(balancer.log_path)) else None

    harness.wait_for(probe, timeout=20.0, what="the balancer and its worker to be ready", check=process.ensure_running)


def _stop_orphan(worker_pid: int, primary_pid: int) -> None:
    """The worker must exit with its primary; should it not, it is ours to stop (by its PID)."""
    deadline = time.monotonic() + WORKER_EXIT_TIMEOUT_S
    while not process_gone(worker_pid) and time.monotonic() < deadline:
        time.sleep(harness.POLL_INTERVAL)
    if process_gone(worker_pid) or not _is_our_worker(worker_pid):
        return
    os.kill(worker_pid, signal.SIGKILL)
    pytest.fail(
        f"worker pid {worker_pid} outlived its primary (pid {primary_pid}) by {WORKER_EXIT_TIMEOUT_S:g}s; killed"
    )


@pytest.fixture
def worker_balancer(tmp_path: Path, xrdp_farm: harness.XrdpFarm) -> Iterator[WorkerBalancer]:
    """A balancer with ``workers = 2``, ready; stopped afterwards, its worker with it."""
    balancer, admin_port = _start(tmp_path / "balancer", xrdp_farm.servers)
    process = balancer.process
    assert process is not None
    worker_pid: int | None = None
    try:
        _wait_ready(balancer, process)
        bal = WorkerBalancer(balancer, admin_port, worker_pid=0)
        workers = bal.api("workers")["workers"]
        roles = [(w["index"], w["role"], w["alive"]) for w in workers]
        assert roles == [(PRIMARY, "primary", True), (WORKER, "worker", True)], f"GET /api/v1/workers: {workers}"
        assert workers[0]["pid"] == process.pid, f"GET /api/v1/workers: {workers}, balancer pid {process.pid}"
        worker_pid = bal.worker_pid = int(workers[1]["pid"])
        assert _parent_pid(worker_pid) == process.pid, f"worker pid {worker_pid} is not a child of {process.pid}"
        yield bal
    finally:
        balancer.close()  # by its PID; nothing to do when the test stopped it already
        if worker_pid is not None:
            _stop_orphan(worker_pid, process.pid)


def _or_fail(bal: WorkerBalancer, action: Callable[[], T]) -> T:
    """Run ``action``; a client that reaches no server fails the test with the balancer's log."""
    try:
        return action()
    except harness.ClientConnectError as exc:
        message = f"{exc}\n{bal.diagnostics()}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


def _sessions_by_user(bal: WorkerBalancer, users: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Wait until the primary lists exactly one relaying session for each of ``users`` (and no other)."""
    seen: list[dict[str, Any]] = []

    def probe() -> dict[str, dict[str, Any]] | None:
        seen[:] = bal.relaying()
        by_user = {s["user"]: s for s in seen}
        if len(seen) == len(users) and set(by_user) == set(users):
            return by_user
        return None

    try:
        return harness.wait_for(probe, timeout=API_TIMEOUT_S, what="the primary's sessions", check=bal.ensure_running)
    except harness.HarnessError as exc:
        message = f"{exc}: want one per user {sorted(users)}, have {seen}\n{bal.diagnostics()}"
    pytest.fail(message, pytrace=False)


def _connect(
    bal: WorkerBalancer,
    run_clients: RunClients,
    hostname: Callable[[str], str],
    users: Sequence[str],
    already_on: Sequence[str] = (),
) -> tuple[list[harness.ClientResult], dict[str, dict[str, Any]]]:
    """Log ``users`` on all at once (``already_on``: users whose clients are still open); their
    clients, and the primary's record of each one's session."""
    host, port = bal.balancer.host, bal.balancer.port
    specs = [harness.ClientSpec(host, port, user, PASSWORD, hostname(user)) for user in users]
    clients = _or_fail(bal, lambda: run_clients(specs))
    sessions = _sessions_by_user(bal, [*already_on, *users])
    for client in clients:
        assert client.alive, f"{client.client_hostname} dropped:\n{client.output()}\n{bal.diagnostics()}"
        recorded = sessions[client.user]["server"]
        assert recorded == client.server, (
            f"{client.user}: the primary says {recorded}, the xrdp logs say {client.server}\n{bal.diagnostics()}"
        )
    return clients, sessions


def _close_and_drain(bal: WorkerBalancer, clients: Sequence[harness.ClientResult]) -> None:
    """Close the clients; every process's sessions must leave the primary's sessions and counts."""
    for client in clients:
        client.close()
    state: list[Any] = []

    def probe() -> bool | None:
        relaying = bal.relaying()
        connections = {s["name"]: s["connections"] for s in bal.api("servers")["servers"]}
        state[:] = [relaying, connections]
        return True if not relaying and not any(connections.values()) else None

    try:
        harness.wait_for(
            probe,
            timeout=API_TIMEOUT_S,
            what="sessions and connection counts to drop to zero",
            check=bal.ensure_running,
        )
    except harness.HarnessError as exc:
        message = f"{exc}: still {state}\n{bal.diagnostics()}"
        pytest.fail(message, pytrace=False)


def test_workers_leastconn_and_sticky_across_processes(
    worker_balancer: WorkerBalancer,
    xrdp_farm: harness.XrdpFarm,
    run_clients: RunClients,
    hostname: Callable[[str], str],
) -> None:
    bal = worker_balancer
    server_names = sorted(server.name for server in xrdp_farm.servers)

    # (1) New users, a batch of one per server at a time, all held open: leastconn (whose counts
    # include the worker's sessions) must put every batch on the three servers, one user on each.
    users: list[str] = []
    home: dict[str, str] = {}  # user -> server
    first_process: dict[str, int] = {}  # user -> the process that relayed their first logon
    opened: list[harness.ClientResult] = []
    for batch in range(1, MAX_BATCHES + 1):
        new = [f"wk{len(users) + i + 1:02d}" for i in range(len(server_names))]
        clients, sessions = _connect(bal, run_clients, hostname, new, already_on=users)
        opened.extend(clients)
        users.extend(new)
        placed = {client.user: client.server for client in clients}
        assert sorted(placed.values()) == server_names, (
            f"batch {batch}: leastconn must spread {new} one per server, got {placed}\n{bal.diagnostics()}"
        )
        for user in new:
            assert sessions[user]["reason"] == "new", f"{user}: {sessions[user]}"
        home.update(placed)
        first_process.update({user: sessions[user]["worker"] for user in new})
        counts = {s["name"]: s["connections"] for s in bal.api("servers")["servers"]}
        assert counts == dict.fromkeys(server_names, batch), f"batch {batch}: connection counts {counts}"
        if batch >= MIN_BATCHES and set(first_process.values()) == {PRIMARY, WORKER}:
            break
    spread = Counter(first_process.values())
    assert set(spread) == {PRIMARY, WORKER}, (
        f"{len(users)} connections, yet not both processes relayed some: {dict(spread)} by process index"
        f"\n{bal.diagnostics()}"
    )
    workers = bal.api("workers")["workers"]
    assert workers[1]["sessions"] == spread[WORKER], f"GET /api/v1/workers {workers}, sessions by process {spread}"
    _close_and_drain(bal, opened)

    # (2) Every user logs on again, all at once: each must be sent back to their server (a sticky
    # hit), whichever process relays them this time; again until one came through the other process.
    crossed: dict[str, tuple[int, int]] = {}  # user -> (first process, process of a return)
    for _round in range(MAX_RETURN_ROUNDS):
        clients, sessions = _connect(bal, run_clients, hostname, users)
        again = {client.user: client.server for client in clients}
        returned_by = {user: session["worker"] for user, session in sessions.items()}
        assert again == home, (
            f"returning users landed on {again}, first on {home}; relayed by process {returned_by},"
            f" first by {first_process}\n{bal.diagnostics()}"
        )
        for user in users:
            assert sessions[user]["reason"] == "sticky-hit", f"{user}: {sessions[user]}"
            if returned_by[user] != first_process[user]:
                crossed[user] = (first_process[user], returned_by[user])
        _close_and_drain(bal, clients)
        if crossed:
            break
    assert crossed, f"in {MAX_RETURN_ROUNDS} rounds no user came back through the other process: {first_process}"

    # One more: a clean stop ends the worker too.
    worker_pid = bal.worker_pid
    code = bal.balancer.stop(signal.SIGTERM)
    assert code == 0, f"balancer exit status {code} on SIGTERM\n{bal.diagnostics()}"
    harness.wait_for(
        lambda: True if process_gone(worker_pid) else None,
        timeout=WORKER_EXIT_TIMEOUT_S,
        what=f"worker pid {worker_pid} to exit with its primary",
    )
