"""Transparent mode end to end: real xrdp hosts log the client's own address, not the balancer's.

Three network namespaces (tests/support/netns.py): the client's, the balancer's (with the routing
of contrib/transparent/rdpbalancer-transparent, run by the farm) and the hosts'. In the hosts'
namespace two xrdp hosts with real logons (xrdp, xrdp-sesman, Xvnc; Linux users with passwords),
each in its own mount and PID namespaces as in session_hosts.py, on two addresses of the hosts'
link: HA on 10.N.2.2 and HB on 10.N.2.3. The balancer (`python3 -m rdpbalancer run`, a child
process in the balancer's namespace) has `transparent = true` on its pool; xfreerdp runs in the
client's namespace (its X display: an Xvfb of the test, reached through the file socket, since
abstract X sockets are per network namespace).

1. alice logs on from 10.N.1.2: the balancer's `routed` line says host_saw=10.N.1.2:PORT, and
   the xrdp that got her logs "connection received from 10.N.1.2 port PORT" (the same port: the
   very connection the balancer opened), never the balancer's 10.N.2.1 (health checks are off,
   so every connection either xrdp logs is a client's).
   sesman starts her session for that address and port too.
2. Her client dies. A new user would now go to the other host (the balancer's explain: leastconn
   ties rotate), so the stickiness is not a coincidence. She comes back from 10.N.1.3: the balancer
   sends her to the same host (reason=sticky-hit), that xrdp logs 10.N.1.3, and sesman reattaches
   her session ("++ reconnected session": the same session, the same display; one session of
   hers, none on the other host).

Root only (namespaces, IP_TRANSPARENT); a missing program or no root fails, never skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import harness, session_hosts
from tests.e2e.session_hosts import USERS, SessionHost
from tests.support.balancer import BalancerProcess
from tests.support.netns import Farm, farm

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
RDP_PORT = 3389  # each host's own address in the hosts' namespace: no port is shared
REQUIRED = ("ip", "nft", "ss", "curl", "Xvfb", "xfreerdp", "xrdp", "xrdp-sesman", "Xvnc", "unshare", "nsenter",
            "useradd", "chpasswd", "openssl")
CLIENT = ("/cert:ignore", "/log-level:INFO", "-clipboard", "/audio-mode:2", "/size:800x600", "/bpp:16",
          "-themes", "-wallpaper", "/gdi:sw")
# xrdp 0.9: "Socket 12: AF_INET connection received from 10.N.1.2 port 41234"
XRDP_PEER = re.compile(r"connection received from (\S+) port (\d+)")
# sesman: "Starting session: session_pid 48, display :20.0, ..., client ip 10.N.1.2:41234 - socket: 11, ..."
# and "++ reconnected session: username alice, display :20.0, session_pid 48, ip 10.N.1.3:52012 - socket: 21"
DISPLAY_OF = re.compile(r"display :(\d+)\.")


@dataclass
class NetnsHost(SessionHost):
    """A session host (session_hosts.py) whose network is the hosts' namespace of the farm: it
    listens on `ip`, and its own commands run in its mount, PID and network namespaces."""

    ip: str = ""

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def run_inside(self, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.ns_pid()), "-m", "-p", "-n", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def xrdp_peers(self) -> list[tuple[str, str, int]]:
        """(line, address, port) of every connection this xrdp accepted, from its own log."""
        found = []
        for line in harness.complete_lines(self.workdir / "xrdp.log"):
            match = XRDP_PEER.search(line)
            if match:
                found.append((line, match.group(1), int(match.group(2))))
        return found

    def sesman_lines(self, what: str) -> list[str]:
        return [line for line in harness.complete_lines(self.workdir / "sesman.log") if what in line]


def listening(net: Farm, ns: str, address: str) -> bool:
    done = net.run(ns, ["ss", "-Hltn", f"src {address}"], timeout_s=10)
    return bool(done.stdout.strip())


def start_host(net: Farm, name: str, ip: str, workdir: Path, cert: Path, key: Path, offset: int) -> NetnsHost:
    """xrdp-sesman and xrdp on `ip` in the hosts' namespace, inside mount+PID namespaces of their own
    (session_hosts.INIT: a private /tmp and /run/xrdp), Xvnc on `ip` too, displays from `offset`."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    sesman_port = harness.system_sesman_port()
    startwm = workdir / "startwm.sh"
    startwm.write_text("#!/bin/sh\n# the session's desktop: it lives until the session is logged off\n"
                       "exec sleep 86400\n")
    startwm.chmod(0o755)
    (workdir / "sesman.ini").write_text(session_hosts.SESMAN_INI.format(
        address=ip, port=sesman_port, startwm=startwm, display_offset=offset, log=workdir / "sesman.log"))
    xrdp_ini = session_hosts.XRDP_INI.format(port=RDP_PORT, cert=cert, key=key, log=workdir / "xrdp.log",
                                             sesman_address=ip)
    assert "port=tcp://127.0.0.1:" in xrdp_ini, "session_hosts.XRDP_INI changed: update this test"
    (workdir / "xrdp.ini").write_text(xrdp_ini.replace("port=tcp://127.0.0.1:", f"port=tcp://{ip}:"))
    (workdir / "init.sh").write_text(session_hosts.INIT.format(workdir=workdir))
    shutil.copy(session_hosts.SCRIPT, workdir / session_hosts.SCRIPT.name)
    argv = net.argv(net.host, ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "sh",
                               str(workdir / "init.sh")])
    init = harness.ManagedProcess(f"host-{name}", argv, workdir / "init.out")
    host = NetnsHost(name, RDP_PORT, ip, workdir, init, ip=ip)
    try:
        for port in (sesman_port, RDP_PORT):
            harness.wait_for(lambda port=port: True if listening(net, net.host, f"{ip}:{port}") else None,  # type: ignore[misc]
                             timeout=15.0, what=f"{name} to listen on {ip}:{port}", check=init.ensure_running,
                             interval=0.1)
    except BaseException:
        init.send_signal(signal.SIGKILL)  # see the fixture's teardown
        init.stop()
        raise harness.HarnessError(f"{name} did not start:\n{host.log_tail()}") from None
    return host


def start_client_display(workdir: Path) -> harness.XvfbDisplay:
    """Xvfb for the clients. Its abstract socket is the test's network namespace's only; a client
    in another namespace falls back to the file socket /tmp/.X11-unix/X<n> (its /tmp is ours)."""
    return harness.start_xvfb(workdir)


@dataclass
class Setup:
    net: Farm
    hosts: dict[str, NetnsHost]
    display: str
    work: Path


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.fail("transparent mode end to end needs root (network namespaces, IP_TRANSPARENT, logons): "
                    "run the suite as root (scripts/test.sh does)")
    missing = [b for b in REQUIRED if shutil.which(b) is None]
    if missing:
        pytest.fail(f"missing programs: {', '.join(missing)} (scripts/install-test-deps.sh installs them; "
                    "nft: apt-get install nftables)")
    harness.require_no_system_xrdp()
    session_hosts.ensure_users()
    work = Path(tempfile.mkdtemp(prefix="rdpb-transparent-", dir="/var/tmp"))  # each host mounts its own /tmp
    os.chmod(work, 0o755)  # the users' sessions run the host's startwm.sh from it
    started: dict[str, NetnsHost] = {}
    xvfb: harness.XvfbDisplay | None = None
    try:
        with farm() as net:
            try:
                second = net.v4(2, 3)
                ns_ip(net.host, "addr", "add", f"{second}/24", "dev", f"{net.tag}h0")
                cert, key = harness.make_certificate(work)
                for name, ip, offset in (("HA", net.host_v4, 20), ("HB", second, 50)):
                    started[name] = start_host(net, name, ip, work / name, cert, key, offset)
                xvfb = start_client_display(work)
                yield Setup(net, started, xvfb.display, work)
            finally:
                if xvfb is not None:
                    xvfb.process.stop()
                for host in started.values():
                    # unshare --fork ignores SIGTERM while it waits; with --kill-child its death ends
                    # the host's PID namespace (sesman, xrdp, the users' sessions)
                    host.init.send_signal(signal.SIGKILL)
                for host in started.values():
                    host.stop()
    finally:
        if not os.environ.get("RDPB_E2E_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def ns_ip(ns: str, *args: str) -> None:
    done = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise harness.HarnessError(f"ip -n {ns} {' '.join(args)}: {done.stderr.strip()}")


def balancer_config(s: Setup, tmp: Path) -> Path:
    rows = ", ".join(f'{{ name = "{n}", address = "{h.address}" }}' for n, h in s.hosts.items())
    path = tmp / "rdpb.toml"
    path.write_text(f"""
[balancer]
listen = ["{s.net.balancer_v4}:0"]
connect_timeout = "5s"
[sticky]
path = "{tmp / 'sticky.db'}"
[health]
check = "none"
[admin]
listen = "127.0.0.1:0"
[[pool]]
name = "xrdp"
balance = "leastconn"
transparent = true
servers = [{rows}]
""")
    return path


def logon(s: Setup, port: int, user: str, tmp: Path, tag: str) -> harness.ManagedProcess:
    """xfreerdp in the client's namespace, to the balancer, as `user` with her password."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DISPLAY": s.display, "HOME": str(home)}
    argv = s.net.argv(s.net.client, ["xfreerdp", f"/v:{s.net.balancer_v4}:{port}", f"/u:{user}",
                                     f"/p:{USERS[user]}", f"/client-hostname:{tag}", *CLIENT])
    return harness.ManagedProcess(f"xfreerdp-{tag}", argv, tmp / f"{tag}.log", env=env, cwd=home)


def routed_line(log: Path, user: str, after: int, client: harness.ManagedProcess) -> str:
    """The balancer's `routed` line for `user`, among the lines after the first `after`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines()[after:]:
            if " routed " in line and f'user="{user}"' in line:
                return line
        if not client.running:
            break
        time.sleep(0.1)
    raise AssertionError(f"no routed line for {user} in {log}:\n{harness.tail(log, 40)}\n"
                         f"client:\n{client.output_tail()}")


def explain(net: Farm, admin_port: int, user: str) -> dict[str, object]:
    """The balancer's decision for `user` now (GET /api/v1/explain, a dry run: asking changes no
    later decision), asked in the balancer's namespace, where its admin API listens."""
    url = f"http://127.0.0.1:{admin_port}/api/v1/explain?user={user}"
    done = net.run(net.balancer, ["curl", "-sSf", "--max-time", "5", url], timeout_s=10)
    assert done.returncode == 0, f"explain {user}: {done.stderr}"
    decision = json.loads(done.stdout)["decision"]
    assert isinstance(decision, dict), done.stdout
    return decision


def line_count(log: Path) -> int:
    return len(log.read_text(errors="replace").splitlines()) if log.exists() else 0


def field(line: str, name: str) -> str:
    found = re.search(rf"\b{name}=(\S+)", line)
    assert found is not None, f"no {name}= in {line}"
    return found.group(1)


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def plain(address: str) -> str:
    """xrdp may log an IPv4 peer as ::ffff:a.b.c.d."""
    return address.removeprefix("::ffff:")


def xrdp_line_for(host: NetnsHost, address: str, after: int) -> tuple[str, int]:
    """xrdp's own log line of a connection from `address` among its connections after the first
    `after`, and the port it names (waits a little: xrdp logs at accept)."""
    def probe() -> tuple[str, int] | None:
        for line, peer, peer_port in host.xrdp_peers()[after:]:
            if plain(peer) == address:
                return line, peer_port
        return None
    try:
        return harness.wait_for(probe, timeout=10.0, what=f"{host.name}'s xrdp to log a connection from {address}",
                                interval=0.1)
    except harness.HarnessError:
        seen = [p[0] for p in host.xrdp_peers()[after:]]
        raise AssertionError(f"{host.name}'s xrdp logged no connection from the client {address}, only {seen}\n"
                             f"{host.log_tail()}") from None


def test_hosts_log_the_clients_address_and_a_returning_user_reattaches_her_session(
        setup: Setup, tmp_path: Path) -> None:
    s, net = setup, setup.net
    log = tmp_path / "balancer.log"
    bal = BalancerProcess(balancer_config(s, tmp_path), 0, log, cwd=ROOT,
                          program=net.argv(net.balancer, [sys.executable, "-m", "rdpbalancer"]),
                          env={"PYTHONPATH": str(ROOT)})
    bal.start(timeout_s=20)
    clients: list[harness.ManagedProcess] = []
    try:
        # 1. alice from 10.N.1.2: the host she lands on logs 10.N.1.2, on the port the balancer bound
        client = logon(s, bal.port, "alice", tmp_path, "alice-t1")
        clients.append(client)
        first = routed_line(log, "alice", 0, client)
        home = field(first, "server")
        other = next(n for n in s.hosts if n != home)
        assert field(first, "addr") == s.hosts[home].address, first
        assert split_address(field(first, "client"))[0] == net.client_v4, first
        xrdp_first, xrdp_port = xrdp_line_for(s.hosts[home], net.client_v4, 0)
        saw_host, saw_port = split_address(field(first, "host_saw"))
        assert saw_host == net.client_v4, f"the balancer says the host saw {saw_host}, not the client: {first}"
        assert saw_port == xrdp_port, (first, xrdp_first)  # the very connection the balancer opened
        session = session_hosts.wait_session(s.hosts[home], "alice", "active", timeout=30)
        created = s.hosts[home].sesman_lines("++ created session")
        assert len(created) == 1 and f"username alice, ip {net.client_v4}:{saw_port} " in created[0], created
        # sesman starts her X server for the address xrdp gave it: the client's, and its port
        started = s.hosts[home].sesman_lines("Starting session: ")
        assert len(started) == 1 and f"client ip {net.client_v4}:{saw_port} " in started[0], started
        assert f"session_pid {session['id']}," in started[0] and "user name alice" in started[0], started
        display = DISPLAY_OF.search(started[0])
        assert display is not None, started

        # 2. her client dies; a new user would now go to the other host (ties rotate), she has an entry
        session_hosts.kill_client(client)
        assert bal.admin_port is not None
        fresh, hers = explain(net, bal.admin_port, "dave"), explain(net, bal.admin_port, "alice")
        assert fresh["reason"] == "new" and fresh["servers"][0] == other, fresh  # type: ignore[index]
        assert hers["reason"] == "sticky-hit" and hers["servers"][0] == home, hers  # type: ignore[index]
        # ... and she comes back from the second address, 10.N.1.3
        ns_ip(net.client, "route", "add", f"{net.balancer_v4}/32", "dev", f"{net.tag}c0",
                   "src", net.client_v4_second)
        mark = line_count(log)
        client = logon(s, bal.port, "alice", tmp_path, "alice-t2")
        clients.append(client)
        again = routed_line(log, "alice", mark, client)
        assert field(again, "server") == home and field(again, "reason") == "sticky-hit", again
        assert split_address(field(again, "client"))[0] == net.client_v4_second, again
        xrdp_again, xrdp_port2 = xrdp_line_for(s.hosts[home], net.client_v4_second, 1)
        saw_host2, saw_port2 = split_address(field(again, "host_saw"))
        assert saw_host2 == net.client_v4_second, again
        assert saw_port2 == xrdp_port2, (again, xrdp_again)
        reconnected = harness.wait_for(lambda: s.hosts[home].sesman_lines("++ reconnected session") or None,
                                       timeout=30.0, what=f"{home}'s sesman to reattach alice's session",
                                       interval=0.2)
        back = session_hosts.wait_session(s.hosts[home], "alice", "active", timeout=30)
        assert back["id"] == session["id"], (session, back)  # her session, not a new one
        assert [x["user"] for x in s.hosts[home].sessions()].count("alice") == 1
        assert not [x for x in s.hosts[other].sessions() if x["user"] == "alice"]
        assert len(s.hosts[home].sesman_lines("++ created session")) == 1
        assert len(reconnected) == 1, reconnected
        assert (f"username alice, display :{display.group(1)}.0, session_pid {session['id']}, "
                f"ip {net.client_v4_second}:{saw_port2} ") in reconnected[0], (started, reconnected)

        # 3. no connection either xrdp accepted came from the balancer's own address
        balancer_own = net.balancer_host_side_v4
        for host in s.hosts.values():
            seen = host.xrdp_peers()
            assert not [line for line, peer, _ in seen if plain(peer) == balancer_own], seen
        assert not s.hosts[other].xrdp_peers(), s.hosts[other].xrdp_peers()

        print("\n".join(["", f"balancer routed:  {first}", f"{home} xrdp.log:     {xrdp_first}",
                         f"{home} sesman.log:   {started[0]}", f"explain new user: {fresh}",
                         f"balancer routed:  {again}",
                         f"{home} xrdp.log:     {xrdp_again}", f"{home} sesman.log:   {reconnected[0]}",
                         f"session before/after: {session} / {back}"]))
    finally:
        for c in clients:
            c.send_signal(signal.SIGKILL)
            c.stop()
        bal.stop()
