"""The HA pair as shipped: contrib/keepalived on two nodes, each with a real `rdpbalancer run`,
one table in Redis, in network namespaces this test makes (and always deletes).

    hub ns:    bridge br0 10.0.0.1 (the fake RDP hosts; the third Redis Sentinel, the README's
               "third small machine")
    client ns: eth0 10.0.0.2 (every probe and session, through the virtual IP 10.0.0.100)
    node a/b:  eth0 10.0.0.11 / 10.0.0.12, keepalived (contrib/keepalived/keepalived-a|b.conf), a
               balancer listening on 0.0.0.0:3389 with its admin API on 127.0.0.1:9000 (the default,
               which the shipped track script asks), a redis-server (the master on b, its replica
               on a) and a Sentinel: the link-down fault takes the Redis master with the node

For each fault on the node holding the address, then for its return (the failback): the time to
the first successful connection through the virtual IP, what the established sessions saw, the
VIP holders sampled until settled, and every user's reconnect against her previous host. The
bounds are generous; the measured figures are printed as a table (`pytest -s`).

Nothing here touches a real network: the addresses exist only inside these namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rdpbalancer.proto import build_connection_request
from tests.support.balancer import LOAD_TEST_LIMITS
from tests.support.fakes import WHO, FakeRdpServer, read_tpkt

pytestmark = [pytest.mark.processes, pytest.mark.real_services, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib" / "keepalived"
HUB, CLIENT, VIP = "10.0.0.1", "10.0.0.2", "10.0.0.100"
NODE_ADDRESS = {"a": "10.0.0.11", "b": "10.0.0.12"}
RDP_PORT, ADMIN_PORT, REDIS_PORT, SENTINEL_PORT = 3389, 9000, 6379, 26379
REDIS_MASTER_FIRST = "b"  # the node the Redis master starts on (its replica: the other node)
SENTINEL_DOWN_AFTER_MS = 1000  # Sentinel's down-after-milliseconds: the master is down after 1 s unanswered
USERS = [f"user{i:02d}" for i in range(16)]
PROBE_EVERY_S = 0.1  # a new connection through the VIP this often, each on its own
PROBE_TIMEOUT_S = 1.0  # a probe that has no answer from its host within this failed
SESSION_PING_S = 0.2  # established sessions send a few bytes this often (a real RDP client does)
SESSION_HUNG_S = 1.0  # no echo for this long: the session is hanging
SETTLED_S = 3.0  # one VIP holder and every probe answered for this long: settled
FEED_PULL_S = 2.0  # the nodes' change feed: pulled every second, with a second's slack
SETTLE_LIMIT_S = 30.0  # generous: the measured failovers take 1-5 s
DROP_IN = CONTRIB / "keepalived.service.d" / "rdpbalancer.conf"
# the drop-in's RestartSec: how long "systemd" waits to restart a crashed keepalived here
RESTART_SEC_S = float(re.search(r"^RestartSec=(\d+)s$", DROP_IN.read_text(), re.M).group(1))  # type: ignore[union-attr]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(*argv: str) -> str:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def ns_socket(ns: str) -> socket.socket:
    """A TCP socket in network namespace `ns`: made by a short-lived thread that entered it (a
    network namespace is per thread); the socket stays in `ns` whichever thread uses it."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            with open(f"/run/netns/{ns}") as handle:
                if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


async def ns_connect(ns: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = ns_socket(ns)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


@dataclass
class Session:
    """A client's connection through the VIP: `server` is the host that answered."""

    user: str
    server: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def abort(self) -> None:
        self.writer.transport.abort()


async def rdp_session(user: str, timeout_s: float = PROBE_TIMEOUT_S) -> Session:
    """Connect from the client namespace through the VIP as `user`, up to the host's answer."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await ns_connect(CLIENT_NS.name, VIP, RDP_PORT)
        try:
            writer.write(build_connection_request(cookie=user.encode()))
            await read_tpkt(reader)
            writer.write(WHO)
            server = (await reader.readline()).decode().strip()
            if not server:
                raise ConnectionError("closed before the host answered")
        except BaseException:
            writer.transport.abort()
            raise
    return Session(user, server, reader, writer)


@dataclass
class Namespaces:
    """The namespace names (a random suffix: several runs may share the machine). `name` of
    CLIENT_NS is set once they exist."""

    suffix: str = field(default_factory=lambda: secrets.token_hex(3))

    def ns(self, role: str) -> str:
        return f"rdpbka{self.suffix}{role}"

    def veth(self, role: str) -> str:  # interface names are at most 15 characters
        return f"rk{self.suffix}{role}"


@dataclass
class _ClientNs:
    name: str = ""


CLIENT_NS = _ClientNs()


def make_network(names: Namespaces) -> None:
    hub = names.ns("h")
    run("ip", "netns", "add", hub)
    run("ip", "-n", hub, "link", "set", "lo", "up")
    run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", hub, "addr", "add", f"{HUB}/24", "dev", "br0")
    run("ip", "-n", hub, "link", "set", "br0", "up")
    for role, address in (("c", CLIENT), ("a", NODE_ADDRESS["a"]), ("b", NODE_ADDRESS["b"])):
        ns, inner, outer = names.ns(role), names.veth(role), names.veth(role) + "p"
        run("ip", "netns", "add", ns)
        # made in the hub's namespace: nothing is ever created in the machine's own
        run("ip", "-n", hub, "link", "add", inner, "type", "veth", "peer", "name", outer)
        run("ip", "-n", hub, "link", "set", inner, "netns", ns)
        run("ip", "-n", hub, "link", "set", outer, "master", "br0", "up")
        run("ip", "-n", ns, "link", "set", inner, "name", "eth0")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        # hosts, not routers (a new namespace may inherit forwarding on): a node that no longer
        # holds the VIP must drop what is sent to it, not pass it on to the node that does
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")


def delete_network(names: Namespaces) -> None:
    for role in ("a", "b", "c", "h"):  # deleting a namespace deletes its interfaces (and the veth peers)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            run("ip", "netns", "delete", names.ns(role))


def shipped_keepalived_conf(node: str, workdir: Path) -> str:
    """contrib/keepalived/keepalived-NODE.conf as shipped, but for the paths of this run and
    `script_user root` (the shipped `rdpbalancer` user does not exist on a test machine)."""
    text = (CONTRIB / f"keepalived-{node}.conf").read_text()
    for shipped, here in (("/usr/local/lib/rdpbalancer/keepalived-notify.sh", str(CONTRIB / "keepalived-notify.sh")),
                          ("/var/lib/rdpbalancer/ha-state", str(workdir / "ha-state")),
                          ("script_user rdpbalancer", "script_user root")):
        assert shipped in text, f"contrib/keepalived/keepalived-{node}.conf no longer has {shipped!r}"
        text = text.replace(shipped, here)
    return text


def node_config(workdir: Path, hosts: list[FakeRdpServer]) -> str:
    rows = ",\n".join(f'  {{ name = "{h.name}", address = "{h.address}" }}' for h in hosts)
    return f"""
[balancer]
listen = ["0.0.0.0:{RDP_PORT}"]
handshake_timeout = "2s"
connect_timeout = "2s"
[sticky]
store = "redis"
path = "{workdir / 'sticky.db'}"
ttl = "8h"
[sticky.redis]
sentinels = [{", ".join(f'"{a}:{SENTINEL_PORT}"' for a in (*NODE_ADDRESS.values(), HUB))}]
service_name = "rdpb"
[health]
check = "none"
[limits]
{LOAD_TEST_LIMITS}
[admin]
ha_state_file = "{workdir / 'ha-state'}"
[log]
level = "info"
[[pool]]
name = "default"
balance = "leastconn"
servers = [
{rows}
]
"""


class Node:
    """One node's balancer and keepalived, each `ip netns exec`-ed into the node's namespace
    (exec: the PID we hold is the program's own) and stopped by that PID."""

    def __init__(self, name: str, ns: str, workdir: Path) -> None:
        self.name, self.ns, self.workdir = name, ns, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o755)  # enable_script_security: no directory above a script writable by others
        self.balancer: subprocess.Popen[bytes] | None = None
        self.keepalived: subprocess.Popen[bytes] | None = None

    def write_configs(self, hosts: list[FakeRdpServer]) -> None:
        (self.workdir / "rdpbalancer.toml").write_text(node_config(self.workdir, hosts))
        (self.workdir / "keepalived.conf").write_text(shipped_keepalived_conf(self.name, self.workdir))

    def start_balancer(self) -> None:
        with (self.workdir / "rdpbalancer.log").open("ab") as log:
            self.balancer = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "rdpbalancer", "run",
                 "-c", str(self.workdir / "rdpbalancer.toml")],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_keepalived(self) -> None:
        w = self.workdir
        with (w / "keepalived.log").open("ab") as log:
            self.keepalived = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "keepalived", "--dont-fork", "--log-console", "--log-detail",
                 "--vrrp", "-f", str(w / "keepalived.conf"), "-p", str(w / "keepalived.pid"),
                 "-r", str(w / "vrrp.pid"), "-c", str(w / "checkers.pid")],
                stdout=log, stderr=subprocess.STDOUT)

    def vrrp_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.workdir / "vrrp.pid").read_text())
        return None

    def kill_keepalived(self) -> None:
        """A crash: SIGKILL to the parent and its VRRP child at once (nothing runs a shutdown)."""
        assert self.keepalived is not None
        child = self.vrrp_pid()
        self.keepalived.send_signal(signal.SIGKILL)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.keepalived.wait(10)
        self.keepalived = None

    def kill_balancer(self, sig: signal.Signals = signal.SIGKILL) -> None:
        assert self.balancer is not None
        self.balancer.send_signal(sig)
        if sig == signal.SIGKILL:
            self.balancer.wait(10)
            self.balancer = None

    def mac(self) -> str:
        return run("ip", "-n", self.ns, "-o", "link", "show", "dev", "eth0").split("link/ether ")[1].split()[0]

    def holds_vip(self) -> bool:
        return f" {VIP}/" in run("ip", "-n", self.ns, "-4", "-o", "addr", "show", "dev", "eth0")

    def ha_state(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "ha-state").read_text().strip()
        return "-"

    async def role(self) -> str:
        """The node's own view of its place in the pair: /api/v1/config's "ha" (from the state
        file keepalived's notify hook writes); "-" when the balancer does not answer."""
        try:
            async with asyncio.timeout(1):
                reader, writer = await ns_connect(self.ns, "127.0.0.1", ADMIN_PORT)
                try:
                    writer.write(b"GET /api/v1/config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    body = (await reader.read()).partition(b"\r\n\r\n")[2]
                finally:
                    writer.transport.abort()
            return str(json.loads(body)["ha"]["role"])
        except (OSError, TimeoutError, ValueError, KeyError, TypeError):
            return "-"

    async def healthy(self) -> bool:
        """The balancer's own /healthz answers 200 (asked as the track script does)."""
        try:
            async with asyncio.timeout(2):
                reader, writer = await ns_connect(self.ns, "127.0.0.1", ADMIN_PORT)
                try:
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    status = await reader.readline()
                finally:
                    writer.transport.abort()
            return b" 200 " in status
        except (OSError, TimeoutError):
            return False

    def stop(self) -> None:
        for proc in (self.keepalived, self.balancer):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        child = self.vrrp_pid()  # a VRRP child whose parent we killed (should have followed it)
        if child is not None and Path(f"/proc/{child}").exists():
            with contextlib.suppress(ProcessLookupError):
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"keepalived" in cmdline and str(self.workdir).encode() in cmdline:
                    os.kill(child, signal.SIGKILL)


class NsFakeServer(FakeRdpServer):
    """A fake RDP host listening in the hub's namespace."""

    async def start(self) -> NsFakeServer:
        sock = ns_socket(HUB_NS.name)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(256)
        sock.setblocking(False)
        self._server = await asyncio.start_server(self._handle, sock=sock)
        self.port = sock.getsockname()[1]
        return self

    async def _echo(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # uvloop: write_eof after a client's reset (every probe ends so) finds the transport closed
        with contextlib.suppress(RuntimeError):
            await super()._echo(first, reader, writer)


HUB_NS = _ClientNs()


@dataclass
class Watched:
    """An established session during a fault: what it saw, and when (from the fault)."""

    session: Session
    outcome: str = "alive"  # "EOF", "reset"; at the end of the watch "alive" or "hung" (no echo lately)
    at_s: float | None = None
    hung_from_s: float | None = None  # the first echo that did not come within SESSION_HUNG_S
    resumed_s: float | None = None  # echoes came again after that


async def watch(item: Watched, t0: float, stop: asyncio.Event) -> None:
    """Send a few bytes every SESSION_PING_S whatever comes back (as a real client does: a
    session that only waited for its echo would never meet the peer's reset) and read the echo."""
    reader, writer = item.session.reader, item.session.writer
    last_echo = time.monotonic()
    try:
        while not stop.is_set():
            writer.write(b"ping")
            tick_end = time.monotonic() + SESSION_PING_S
            while (left := tick_end - time.monotonic()) > 0:
                try:
                    data = await asyncio.wait_for(reader.read(4096), left)
                except TimeoutError:
                    break
                if not data:
                    item.outcome, item.at_s = "EOF", time.monotonic() - t0
                    return
                last_echo = time.monotonic()
                if item.hung_from_s is not None and item.resumed_s is None:
                    item.resumed_s = last_echo - t0
            if time.monotonic() - last_echo > SESSION_HUNG_S and item.hung_from_s is None:
                item.hung_from_s = max(0.0, last_echo - t0)
        if time.monotonic() - last_echo > SESSION_HUNG_S:
            item.outcome = "hung"
    except OSError as exc:
        item.outcome = "reset" if isinstance(exc, ConnectionResetError) else type(exc).__name__
        item.at_s = time.monotonic() - t0


@dataclass
class Measure:
    """Probes and VIP holders from `t0` on, until the pair has settled."""

    nodes: list[Node]
    holders_expected: int = 1  # settled with this many holders (2: a partition, both nodes MASTER)
    t0: float = field(default_factory=time.monotonic)
    probes: list[tuple[float, float, bool]] = field(default_factory=list)  # (started, ended, ok) from t0
    holders: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    async def probe(self, user: str) -> None:
        started = time.monotonic() - self.t0
        ok = False
        try:
            session = await rdp_session(user)
            session.abort()
            ok = True
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        self.probes.append((started, time.monotonic() - self.t0, ok))

    def sample_holders(self) -> tuple[str, ...]:
        held = tuple(n.name for n in self.nodes if n.holds_vip())
        self.holders.append((time.monotonic() - self.t0, held))
        return held

    def settled(self) -> bool:
        now = time.monotonic() - self.t0
        recent = [h for t, h in self.holders if t >= now - SETTLED_S]
        if now < SETTLED_S or not recent or len(set(recent)) != 1 or len(recent[0]) != self.holders_expected:
            return False
        probes = [ok for start, _end, ok in self.probes if start >= now - SETTLED_S - PROBE_TIMEOUT_S
                  and _end <= now]
        return bool(probes) and all(probes)

    async def until_settled(self, limit_s: float = SETTLE_LIMIT_S) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self.settled():
                if time.monotonic() - self.t0 > limit_s:
                    raise TimeoutError(f"not settled after {limit_s:g} s: holders {self.holders[-5:]}, "
                                       f"probes {self.probes[-5:]}")
                task = asyncio.create_task(self.probe("prober"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.to_thread(self.sample_holders)
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            await asyncio.gather(*tasks)

    def first_success_s(self) -> float | None:
        """When the first probe that started after the last failed one succeeded: the time to the
        first connection through the VIP once the fault has cost what it costs."""
        after = max((start for start, _end, ok in self.probes if not ok), default=-1.0)
        return min((end for start, end, ok in self.probes if ok and start > after), default=None)

    def failed_probes(self) -> int:
        return sum(1 for *_x, ok in self.probes if not ok)

    def failed_text(self) -> str:
        """How many probes failed, started over how long (a probe started each PROBE_EVERY_S)."""
        starts = [start for start, _end, ok in self.probes if not ok]
        return f"{len(starts)} from {min(starts):.1f} to {max(starts):.1f} s" if starts else "0"

    def held_by_s(self, count: int) -> float:
        """How long the address was on `count` nodes (from the samples)."""
        total, last = 0.0, None
        for t, held in self.holders:
            if last is not None and len(last[1]) == count:
                total += t - last[0]
            last = (t, held)
        return total

    def holders_text(self) -> str:
        final = self.holders[-1][1] if self.holders else ()
        text = f"{len(final)} ({'/'.join(final) or '-'})"
        for count in (2, 0):
            if any(len(h) == count for _t, h in self.holders):
                text += f", {count} for {self.held_by_s(count):.1f} s"
        return text


def seen_text(watched: list[Watched]) -> str:
    by: dict[str, list[Watched]] = {}
    for w in watched:
        by.setdefault(w.outcome, []).append(w)
    parts = []
    for outcome, items in sorted(by.items()):
        times = [w.at_s for w in items if w.at_s is not None]
        hung = [w.hung_from_s for w in items if w.hung_from_s is not None]
        resumed = [w.resumed_s for w in items if w.resumed_s is not None]
        text = f"{len(items)} {outcome}"
        if times:
            text += f" at {min(times):.1f}-{max(times):.1f} s"
        if hung:
            text += f" (no echo from {min(hung):.1f} s" + (f" to {max(resumed):.1f} s)" if resumed else ")")
        parts.append(text)
    return ", ".join(parts) or "none held"


@dataclass
class Row:
    fault: str
    first_ok_s: float | None
    failed_probes: int
    failed: str
    sessions: str
    mismatched: list[str]  # users whose reconnect reached another host than before
    holders: str
    roles: str
    redis: str
    arp: str


class RedisPair:
    """A redis-server on each node (the master on REDIS_MASTER_FIRST, a replica on the other) and
    three Sentinels (one per node and one on the hub), quorum 2: Sentinel can fail over while
    either node is away. Asked with redis-cli from the hub's namespace (in a thread: the test's
    event loop runs the fake hosts)."""

    def __init__(self, workdir: Path, names: Namespaces) -> None:
        self.workdir, self.names = workdir, names
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, ns: str, name: str, argv: list[str]) -> None:
        directory = self.workdir / name
        directory.mkdir(parents=True)
        with (directory / "log").open("ab") as log:
            self.procs.append(subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=directory,
                                               stdout=log, stderr=subprocess.STDOUT))

    def start(self) -> None:
        master = NODE_ADDRESS[REDIS_MASTER_FIRST]
        for node, address in NODE_ADDRESS.items():
            replica = [] if node == REDIS_MASTER_FIRST else ["--replicaof", master, str(REDIS_PORT)]
            self._spawn(self.names.ns(node), f"redis-{node}",
                        ["redis-server", "--bind", address, "--port", str(REDIS_PORT), "--save", "",
                         "--appendonly", "no", "--protected-mode", "no", *replica])
        for role, address in (("a", NODE_ADDRESS["a"]), ("b", NODE_ADDRESS["b"]), ("h", HUB)):
            conf = self.workdir / f"sentinel-{role}.conf"  # Sentinel rewrites its file: one each
            conf.write_text(f"port {SENTINEL_PORT}\nbind {address}\nprotected-mode no\n"
                            f"sentinel monitor rdpb {master} {REDIS_PORT} 2\n"
                            f"sentinel down-after-milliseconds rdpb {SENTINEL_DOWN_AFTER_MS}\n"
                            "sentinel failover-timeout rdpb 10000\n")
            self._spawn(self.names.ns(role), f"sentinel-{role}", ["redis-server", str(conf), "--sentinel"])

    def cli(self, host: str, port: int, *commands: str) -> list[str]:
        done = subprocess.run(["ip", "netns", "exec", self.names.ns("h"), "redis-cli", "--raw", "-h", host,
                               "-p", str(port)], input="\n".join(commands) + "\n", capture_output=True,
                              text=True, timeout=10, check=False)
        return done.stdout.splitlines()

    def master(self) -> str:
        """The node holding the Redis master, as the hub's Sentinel says ("?" before it knows)."""
        answer = self.cli(HUB, SENTINEL_PORT, "SENTINEL get-master-addr-by-name rdpb")
        by_address = {a: n for n, a in NODE_ADDRESS.items()}
        return by_address.get(answer[0], "?") if answer else "?"

    def ready(self) -> bool:
        """Every Sentinel knows the other two and the replica (else no failover could happen)."""
        for address in (*NODE_ADDRESS.values(), HUB):
            lines = self.cli(address, SENTINEL_PORT, "SENTINEL master rdpb")
            fields = dict(zip(lines[::2], lines[1::2], strict=False))
            if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                return False
        return True

    def whole(self) -> bool:
        """The master (as Sentinel says) has its replica again: the other node's redis-server
        was demoted (an old master is, by Sentinel, some seconds after it is back) and synced."""
        address = NODE_ADDRESS.get(self.master())
        lines = self.cli(address, REDIS_PORT, "INFO replication") if address else []
        return "connected_slaves:1" in lines and any(line.startswith("slave0:") and "state=online" in line
                                                      for line in lines)

    def servers(self, users: list[str]) -> dict[str, str]:
        """Each user's server in the master's table."""
        address = NODE_ADDRESS.get(self.master(), HUB)
        answer = self.cli(address, REDIS_PORT, *(f"HGET rdpb:u:{u} server" for u in users))
        return dict(zip(users, answer, strict=False))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


class Lab:
    def __init__(self, tmp_path: Path, names: Namespaces) -> None:
        self.tmp, self.names = tmp_path, names
        self.nodes = [Node(n, names.ns(n), tmp_path / f"node-{n}") for n in ("a", "b")]
        self.hosts: list[FakeRdpServer] = []
        self.redis = RedisPair(tmp_path / "redis", names)
        self.homes: dict[str, str] = {}
        self.rows: list[Row] = []

    def holder(self) -> Node:
        held = [n for n in self.nodes if n.holds_vip()]
        assert len(held) == 1, f"VIP holders: {[n.name for n in held]}"
        return held[0]

    async def start(self) -> None:
        HUB_NS.name, CLIENT_NS.name = self.names.ns("h"), self.names.ns("c")
        self.hosts = [await NsFakeServer(f"TS0{i}", host=HUB).start() for i in range(1, 5)]
        self.redis.start()
        await self.until(lambda: self.sync(self.redis.ready), 40, "Sentinels: each other and the replica")
        for node in self.nodes:
            node.write_configs(self.hosts)
            node.start_balancer()
        for node in self.nodes:
            await self.until(node.healthy, 30, f"node {node.name}'s /healthz")
        self.nodes[0].start_keepalived()  # a first, so that the run starts the same way each time
        await self.until(lambda: self.sync(self.nodes[0].holds_vip), 15, "node a to take the VIP")
        self.nodes[1].start_keepalived()
        await self.until(lambda: self.sync(lambda: self.nodes[1].ha_state() == "backup"), 15, "node b BACKUP")
        for user in USERS:
            self.homes[user] = (await self.connect(user)).server

    async def connect(self, user: str) -> Session:
        session = await rdp_session(user, timeout_s=5)
        session.abort()
        return session

    @staticmethod
    async def sync(predicate: Callable[[], bool]) -> bool:
        return await asyncio.to_thread(predicate)

    @staticmethod
    async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s:g} s")
            await asyncio.sleep(0.1)

    def client_arp(self) -> str:
        """The node the client's ARP entry for the VIP points at (where its packets go)."""
        entry = run("ip", "-n", self.names.ns("c"), "neigh", "show", VIP)
        return next((n.name for n in self.nodes if n.mac() in entry), "-") + \
            (" (stale)" if "STALE" in entry or "DELAY" in entry or "PROBE" in entry else "")

    async def hold_sessions(self) -> list[Watched]:
        sessions = await asyncio.gather(*(rdp_session(u, timeout_s=5) for u in USERS))
        return [Watched(s) for s in sessions]

    async def watch_redis(self, t0: float, stop: asyncio.Event) -> str:
        """Where the Redis master is at the end, and when it moved (from the fault)."""
        first = await asyncio.to_thread(self.redis.master)
        moved = ""
        while not stop.is_set():
            now = await asyncio.to_thread(self.redis.master)
            if now != first and not moved and now != "?":
                moved = f"{first} -> {now} after {time.monotonic() - t0:.1f} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
        return moved or first

    async def fault(self, name: str, inject: Callable[[], Awaitable[None] | None], *, returning: bool = False,
                    holders: int = 1) -> Measure:
        """Hold every user's session, inject, measure until settled, place two newcomers, then
        reconnect every user (the newcomers of earlier rows too)."""
        watched = await self.hold_sessions()
        arp_before = await asyncio.to_thread(self.client_arp)
        measure = Measure(self.nodes, holders)
        stop = asyncio.Event()
        replica_back_s: float | None = None
        watchers = [asyncio.create_task(watch(w, measure.t0, stop)) for w in watched]
        redis = asyncio.create_task(self.watch_redis(measure.t0, stop))
        try:
            result = inject()
            if result is not None:
                await result
            await measure.until_settled()
            if returning:  # the returned node is the standby again before the next fault
                await self.until(lambda: self.sync(lambda: sorted(n.ha_state() for n in self.nodes)
                                                   == ["backup", "master"]), SETTLE_LIMIT_S, f"{name}: standby")
                # and Redis has its replica again: until Sentinel demotes an old master that is back,
                # the balancer beside it reads and writes that server, not the cluster's table
                await self.until(lambda: self.sync(self.redis.whole), SETTLE_LIMIT_S, f"{name}: Redis replica")
                replica_back_s = time.monotonic() - measure.t0
            await asyncio.sleep(SESSION_HUNG_S)  # a session hung at the end is seen as such
        finally:
            stop.set()
            await asyncio.gather(*watchers)
            for w in watched:
                w.session.abort()
        arp = f"{arp_before} -> {await asyncio.to_thread(self.client_arp)}"
        for i in range(2):
            newcomer = f"new{len(self.rows)}{i}"
            self.homes[newcomer] = (await self.connect(newcomer)).server
        # a node pulls the other's placements every second (README): a fault within that second
        # would leave these two unknown to the other side (measured: placed there again)
        await asyncio.sleep(FEED_PULL_S)
        mismatched = [user for user, home in self.homes.items() if (await self.connect(user)).server != home]
        roles = " ".join([f"{n.name}:{await n.role()}" for n in self.nodes])
        self.rows.append(Row(name, measure.first_success_s(), measure.failed_probes(), measure.failed_text(),
                             seen_text(watched),
                             mismatched, measure.holders_text(), roles,
                             await redis + (f", replica synced at {replica_back_s:.1f} s"
                                            if replica_back_s is not None and replica_back_s > SETTLED_S + 1 else ""),
                             arp))
        return measure

    def table(self) -> str:
        head = ("fault", "first ok (s)", "probes failed (started at)", "established sessions saw", "sticky mismatches",
                "VIP holders (end)", "client ARP", "nodes say", "Redis master")
        rows = [head] + [(r.fault, "-" if r.first_ok_s is None else f"{r.first_ok_s:.2f}", r.failed,
                          r.sessions, str(len(r.mismatched)), r.holders, r.arp, r.roles, r.redis) for r in self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    for tool in ("ip", "keepalived", "redis-server", "redis-cli", "curl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is not installed (scripts/install-test-deps.sh installs it)")
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the suite as root (scripts/test.sh does)")
    names = Namespaces()
    try:
        make_network(names)
        yield names
    finally:
        delete_network(names)


async def test_the_shipped_pair_fails_over_and_back_keeping_every_user_on_her_host(
        tmp_path: Path, namespaces: Namespaces) -> None:
    lab = Lab(tmp_path, namespaces)
    try:
        await lab.start()
        # 1. the active node's balancer is killed; brought back (nopreempt: the address stays)
        down = lab.holder()
        await lab.fault(f"balancer kill -9 ({down.name})", down.kill_balancer)
        await lab.fault(f"return of {down.name} (balancer restarted)", down.start_balancer, returning=True)
        # 2. the active node's balancer hangs (SIGSTOP): /healthz answers nothing within curl's limit
        down = lab.holder()
        await lab.fault(f"balancer hung, SIGSTOP ({down.name})", lambda: down.kill_balancer(signal.SIGSTOP))
        await lab.fault(f"return of {down.name} (SIGCONT)", lambda: down.kill_balancer(signal.SIGCONT), returning=True)
        # 3. keepalived crashes on the active node; "systemd" restarts it after RestartSec
        down = lab.holder()

        restarts: set[asyncio.Task[None]] = set()

        async def restart_keepalived_later() -> None:
            await asyncio.sleep(RESTART_SEC_S)
            down.start_keepalived()

        def crash() -> None:
            down.kill_keepalived()
            restarts.add(asyncio.create_task(restart_keepalived_later()))

        await lab.fault(f"keepalived kill -9 ({down.name}), restarted after {RESTART_SEC_S:g} s", crash,
                        returning=True)
        await asyncio.gather(*restarts)
        # 4. the active node's link goes down (its switch port); then back up: the failback
        down = lab.holder()
        assert (down.name, await asyncio.to_thread(lab.redis.master)) == ("b", "b"), "the sequence changed: " \
            "the link-down fault must take the VIP holder and the Redis master together"
        port = namespaces.veth(down.name) + "p"

        def link(state: str) -> None:
            run("ip", "-n", namespaces.ns("h"), "link", "set", port, state)

        await lab.fault(f"link down ({down.name}, with the Redis master)", lambda: link("down"))
        await lab.fault(f"return of {down.name} (link up)", lambda: link("up"), returning=True)
        # 5. the nodes lose each other, both links up (iptables in node a's namespace): both MASTER
        down = lab.holder()

        def partition(action: str) -> None:
            for chain, way in (("INPUT", "-s"), ("OUTPUT", "-d")):
                run("ip", "netns", "exec", namespaces.ns("a"), "iptables", action, chain, way, NODE_ADDRESS["b"],
                    "-j", "DROP")

        await lab.fault("partition between the nodes, links up", lambda: partition("-A"), holders=2)
        # the worst case of the heal: the client sends to the node that will give the address up
        # (both nodes announce it every 5 s while they are both MASTER: it flips back and forth)
        await lab.until(lambda: lab.sync(lambda: lab.client_arp().startswith("b")), 15, "the client's ARP on b")
        await lab.fault("partition healed (client's ARP on b)", lambda: partition("-D"), returning=True)
        stored = await asyncio.to_thread(lab.redis.servers, list(lab.homes))
        lost = {u: (home, stored.get(u)) for u, home in lab.homes.items() if stored.get(u) != home}
        print(f"\nkeepalived pair (contrib/keepalived), {len(USERS)} users with sessions, 2 newcomers a row, "
              f"probes every {PROBE_EVERY_S:g} s; sticky mismatches of {len(lab.homes)} users at the end:\n"
              + lab.table() + f"\nthe Redis master's table at the end: {len(lab.homes) - len(lost)} of "
              f"{len(lab.homes)} users on the host they last reached")
        # a partition: each side places the users it alone sees (the other side learns them when it
        # heals, the later placement kept): only the partition's two newcomers may move. The users
        # node a placed while node b's link was down reach b's own table once b sees the new master
        # (it reads the change feed again from its start), so they stay put in the partition that
        # follows, where b routes from its own table.
        placed_apart = {f"new{i}{j}" for i, row in enumerate(lab.rows)
                        if row.fault.startswith("partition between") for j in range(2)}
        assert set(lost) <= placed_apart, f"users whose server the Redis master lost or changed: {lost}"
        for row in lab.rows:
            assert set(row.mismatched) <= placed_apart, f"{row.fault}: reconnected to another host: {row.mismatched}"
            if row.fault.startswith("partition between"):
                assert row.holders.startswith("2 "), f"{row.fault}: VIP holders at the end {row.holders}"
                continue
            assert row.holders.startswith("1 "), f"{row.fault}: VIP holders at the end {row.holders}"
            holder = row.holders.split("(")[1][0]
            assert f"{holder}:active" in row.roles, f"{row.fault}: holder {holder}, the nodes say {row.roles}"
            assert row.first_ok_s is not None and row.first_ok_s < 15, \
                f"{row.fault}: first connection through the VIP after {row.first_ok_s} s"
            if row.fault.startswith("return"):
                assert row.failed_probes == 0, f"{row.fault}: {row.failed_probes} probes failed on failback"
                assert row.sessions == f"{len(USERS)} alive", f"{row.fault}: sessions saw {row.sessions}"
    finally:
        lab.stop()
        for host in lab.hosts:
            await host.stop()
