"""Transparent mode with real sockets in network namespaces (tests/support/netns.py): a client
namespace, the balancer's routing between two veth links with the shipped routing script, a
host namespace whose default route goes through the balancer. The host is a real TCP server
(tests/support/netns_peer.py) that tells each client the address it saw.

Root only (namespaces, IP_TRANSPARENT): not root fails, it does not skip."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.balancer import stop_process
from tests.support.netns import ROOT, SCRIPT, Farm, farm

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

HOST_PORT = 3389
ADMIN = "127.0.0.1:8080"  # inside the balancer's namespace
# no capability that lets a process open sockets from a foreign address (CAP_NET_RAW does too)
DROP_CAPS = ["setpriv", "--bounding-set=-net_admin,-net_raw", "--inh-caps=-net_admin,-net_raw",
             "--ambient-caps=-net_admin,-net_raw"]


@pytest.fixture(scope="module")
def net() -> Iterator[Farm]:
    if os.geteuid() != 0:
        pytest.fail("transparent mode tests need root (network namespaces, IP_TRANSPARENT)")
    for tool in ("ip", "nft", "setpriv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (.ci/run installs iproute2, nftables, util-linux)")
    with farm() as made:
        yield made


@pytest.fixture(scope="module")
def host(net: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The host's server: its log of every peer it saw."""
    log = tmp_path_factory.mktemp("host") / "peers.log"
    log.touch()
    proc = net.popen(net.host, [sys.executable, "-m", "tests.support.netns_peer", "server", str(HOST_PORT), str(log)],
                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line == "serving", f"host server did not start: {line} {proc.stdout.read(2000)!r}"
    yield log
    stop_process(proc)
    proc.stdout.close()


def config(net: Farm, tmp: Path, *, transparent: bool = True, connect_timeout: str = "2s", workers: int = 1,
           attempts: int = 1, check: str = "rdp", extra_four: str = "") -> str:
    flag = "true" if transparent else "false"
    return f"""
[balancer]
workers = {workers}
listen = ["{net.balancer_v4}:3389", "[{net.balancer_v6}]:3389",
          {{ address = "{net.balancer_v4}:3390", proxy_protocol = true }}]
trusted_proxies = ["{net.v4(1, 0)}/24"]
handshake_timeout = "2s"
connect_timeout = "{connect_timeout}"
max_connect_attempts = {attempts}
[sticky]
path = "{tmp / 'sticky.db'}"
sync = "normal"
[health]
check = "{check}"
interval = "1s"
failover_after = "never"
[admin]
listen = "{ADMIN}"
[[pool]]
name = "four"
transparent = {flag}
servers = [{extra_four}{{ name = "H4", address = "{net.host_v4}:{HOST_PORT}" }}]
[[pool]]
name = "six"
transparent = {flag}
servers = [{{ name = "H6", address = "[{net.host_v6}]:{HOST_PORT}" }}]
[[route]]
sources = ["{net.v6(1, 0)}/64"]
pool = "six"
[[route]]
pool = "four"
"""


class Running:
    """`rdpbalancer run` in the balancer's namespace, stopped by PID."""

    def __init__(self, net: Farm, tmp: Path, text: str, wrap: list[str] | None = None) -> None:
        self.net, self.conf, self.log = net, tmp / "rdpb.toml", tmp / "rdpb.log"
        self.conf.write_text(text)
        out = self.log.open("ab")
        self.proc = net.popen(net.balancer, [*(wrap or []), sys.executable, "-m", "rdpbalancer", "run",
                                             "-c", str(self.conf)],
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float = 15.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text()[after:])
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the balancer's log (exit {self.proc.poll()}):\n{self.text()[-3000:]}")

    def serving(self) -> Running:
        self.wait_for(r"admin API on http://")
        return self

    def metric(self, name: str, labels: str) -> float:
        done = self.net.run(self.net.balancer, ["curl", "-sf", f"http://{ADMIN}/metrics"])
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines():
            if line.startswith(f"{name}{{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name}{{{labels}}} not in /metrics")

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture()
def balancers(net: Farm, tmp_path: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        running.stop()


def start(balancers: list[Running], net: Farm, tmp: Path, text: str, wrap: list[str] | None = None) -> Running:
    running = Running(net, tmp, text, wrap)
    balancers.append(running)
    return running


def client(net: Farm, host: str, user: str, *extra: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return net.run(net.client, [sys.executable, "-m", "tests.support.netns_peer", "client", host, "3389", user,
                                *extra], timeout_s=timeout_s,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def saw(net: Farm, host: str, user: str, *extra: str) -> str:
    done = client(net, host, user, *extra)
    assert done.returncode == 0, f"client failed: {done.stdout}{done.stderr[-2000:]}"
    return done.stdout.splitlines()[0]


@contextlib.contextmanager
def held_session(net: Farm, user: str) -> Iterator[str]:
    """A session kept open while the block runs: yields the address its host saw; on leaving,
    checks that it still relays (what happened meanwhile did not cut it)."""
    held = net.popen(net.client, [sys.executable, "-m", "tests.support.netns_peer", "client", net.balancer_v4,
                                  "3389", user, "--hold"],
                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert held.stdout is not None
        yield held.stdout.readline().decode().strip()
        out, err = held.communicate(b"go on\n", timeout=15)
        assert out.decode().split() == ["alive"], err.decode()[-2000:]
    finally:
        stop_process(held)
        for stream in (held.stdin, held.stdout, held.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def host_of(seen: str) -> str:
    return seen.rsplit(":", 1)[0].strip("[]")


def test_hosts_see_each_client_address_ipv4_ipv6_and_behind_a_proxy(net: Farm, host: Path, balancers: list[Running],
                                                                     tmp_path: Path) -> None:
    b = start(balancers, net, tmp_path, config(net, tmp_path)).serving()
    first = saw(net, net.balancer_v4, "alice")
    assert host_of(first) == net.client_v4
    second = saw(net, net.balancer_v4, "bob", "--source", net.client_v4_second)
    assert host_of(second) == net.client_v4_second
    six = saw(net, net.balancer_v6, "carol", "--source", net.client_v6)
    assert host_of(six) == net.client_v6
    # a returning user, from her other address: same host, seen from where she is now
    again = saw(net, net.balancer_v4, "alice", "--source", net.client_v4_second)
    assert host_of(again) == net.client_v4_second
    # behind a trusted proxy: the address the PROXY header reported (not the proxy's own)
    reported = net.v4(1, 77)
    done = net.run(net.client, [sys.executable, "-m", "tests.support.netns_peer", "client", net.balancer_v4, "3390",
                                "dave", "--proxy", reported], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert host_of(done.stdout.splitlines()[0]) == reported

    # the log and the metrics say what the host saw
    routed = b.wait_for(rf"routed client={re.escape(net.client_v4)}:\d+ .*user=.alice. .*server=H4 .*"
                        rf"host_saw=({re.escape(first)})")
    assert routed.group(1) == first
    b.wait_for(rf"user=.carol. .*server=H6 .*host_saw=\[{re.escape(net.client_v6)}\]:\d+")
    b.wait_for(rf"user=.dave. .*host_saw={re.escape(reported)}:\d+")
    assert b.metric("rdpbalancer_backend_connections_total", 'seen="client"') == 5
    assert b.metric("rdpbalancer_backend_connections_total", 'seen="balancer"') == 0
    # health checks (every second) keep the balancer's own address
    own = (f"{net.balancer_host_side_v4}:", f"[{net.balancer_host_side_v6}]:")
    deadline = time.monotonic() + 5
    while not all(any(p.startswith(a) for p in host.read_text().split()) for a in own):
        assert time.monotonic() < deadline, f"no health check from {own}: {host.read_text()[-1000:]}"
        time.sleep(0.1)


def test_workers_and_a_handoff_keep_the_mode(net: Farm, host: Path, balancers: list[Running], tmp_path: Path) -> None:
    """Two worker processes relay (each opens its own transparent sockets); after a handoff the
    new process does, while the old one keeps relaying the session it had."""
    b = start(balancers, net, tmp_path, config(net, tmp_path, workers=2)).serving()
    b.wait_for(r"1 worker processes started")  # and the primary: two processes relay
    done = client(net, net.balancer_v4, "user", "--count", "24")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {host_of(line) for line in done.stdout.split()} == {net.client_v4}
    # the kernel spreads the 24 connections over the processes (a session id starts with its pid)
    relayed_by = set(re.findall(r"session=(\w{6})\w+ routed", b.text()))
    assert len(relayed_by) >= 2, relayed_by
    with held_session(net, "ivan") as ivan_saw:
        assert host_of(ivan_saw) == net.client_v4
        mark = len(b.text())
        b.proc.send_signal(signal.SIGUSR2)
        new_pid = int(b.wait_for(r"handoff: pid (\d+) accepts new connections now", after=mark).group(1))
        assert new_pid != b.proc.pid
        assert host_of(saw(net, net.balancer_v4, "judy", "--source", net.client_v4_second)) == net.client_v4_second
        judy = b.wait_for(rf"session=(\w{{6}})\w+ routed .*user=.judy. .*host_saw={re.escape(net.client_v4_second)}",
                          after=mark)
        assert int(judy.group(1), 16) != b.proc.pid  # relayed by the new process (or its workers)
    b.wait_for(r"handoff: the last session ended here; exiting", timeout_s=20)
    os.kill(new_pid, signal.SIGTERM)  # the successor, started by the balancer this test started
    deadline = time.monotonic() + 15
    while Path(f"/proc/{new_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_reload_switches_the_mode_for_new_connections_only(net: Farm, host: Path, balancers: list[Running],
                                                             tmp_path: Path) -> None:
    b = start(balancers, net, tmp_path, config(net, tmp_path, transparent=False)).serving()
    assert host_of(saw(net, net.balancer_v4, "erin")) == net.balancer_host_side_v4
    with held_session(net, "frank") as frank_saw:
        assert host_of(frank_saw) == net.balancer_host_side_v4
        b.conf.write_text(config(net, tmp_path, transparent=True))
        mark = len(b.text())
        b.proc.send_signal(signal.SIGHUP)
        b.wait_for(r"configuration reloaded", after=mark)
        assert host_of(saw(net, net.balancer_v4, "erin")) == net.client_v4
    # the session from before went on, from the balancer's address
    assert b.metric("rdpbalancer_backend_connections_total", 'seen="client"') == 1
    assert b.metric("rdpbalancer_backend_connections_total", 'seen="balancer"') == 2


def test_without_the_capability_start_fails_and_a_reload_is_refused(net: Farm, host: Path, balancers: list[Running],
                                                                    tmp_path: Path) -> None:
    first = start(balancers, net, tmp_path, config(net, tmp_path), wrap=DROP_CAPS)
    assert first.proc.wait(timeout=20) == 1
    error = first.text()
    assert "transparent = true (servers H4, H6)" in error and "CAP_NET_ADMIN" in error, error[-2000:]
    assert "Traceback" not in error

    second_dir = tmp_path / "b"
    second_dir.mkdir()
    b = start(balancers, net, second_dir, config(net, second_dir, transparent=False), wrap=DROP_CAPS).serving()
    b.conf.write_text(config(net, second_dir, transparent=True))
    mark = len(b.text())
    b.proc.send_signal(signal.SIGHUP)
    refused = b.wait_for(r"reload refused, the running configuration stays in force:\n(.*)", after=mark)
    assert "CAP_NET_ADMIN" in refused.group(1)
    assert host_of(saw(net, net.balancer_v4, "gina")) == net.balancer_host_side_v4  # still serving, as before


def test_a_host_that_refuses_fails_over_as_usual(net: Farm, host: Path, balancers: list[Running],
                                                 tmp_path: Path) -> None:
    """A refusal is the host's: the next server is tried, from the client's address too."""
    dead = f'{{ name = "H4dead", address = "{net.host_v4}:{HOST_PORT + 10}" }}, '
    b = start(balancers, net, tmp_path, config(net, tmp_path, attempts=2, check="none", extra_four=dead)).serving()
    done = client(net, net.balancer_v4, "user", "--count", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {host_of(line) for line in done.stdout.split()} == {net.client_v4}  # every user reached H4
    failed = b.wait_for(r"connect to H4dead \(\S+\) failed: (.*)")
    assert "refused" in failed.group(1) and "transparent" not in failed.group(1)  # not the return route


def test_a_missing_return_route_is_named(net: Farm, host: Path, balancers: list[Running], tmp_path: Path) -> None:
    b = start(balancers, net, tmp_path, config(net, tmp_path, connect_timeout="1s")).serving()
    net.set_return_route(False)
    try:
        done = client(net, net.balancer_v4, "hank")
        assert done.returncode != 0  # the client is closed: no server could be reached
        found = b.wait_for(r"connect to H4 \(\S+\) failed: (.*)")
        assert (f"transparent mode: the server's replies to {net.client_v4} most likely do not route back through "
                "this balancer") in found.group(1)
    finally:
        net.set_return_route(True)


def test_check_config_reports_what_the_machine_lacks(net: Farm, tmp_path: Path) -> None:
    conf = tmp_path / "rdpb.toml"
    conf.write_text(config(net, tmp_path))
    argv = [sys.executable, "-m", "rdpbalancer", "check-config", "-c", str(conf)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ready = net.run(net.balancer, argv, env=env)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "transparent mode for H4, H6:" in ready.stdout
    assert "missing" not in ready.stdout

    bare = f"{net.tag}x"  # a namespace without the routing
    subprocess.run(["ip", "netns", "add", bare], check=True, timeout=10)
    try:
        lacking = subprocess.run(["ip", "netns", "exec", bare, *argv], capture_output=True, text=True,
                                 timeout=30, check=False, env=env)
    finally:
        subprocess.run(["ip", "netns", "del", bare], check=False, timeout=10)
    assert lacking.returncode == 1, lacking.stdout + lacking.stderr
    missing = [line for line in lacking.stdout.splitlines() if line.strip().startswith("missing:")]
    assert len(missing) == 3, lacking.stdout
    assert "IPv4: no `ip rule`" in missing[0] and "ip -4 route add local 0.0.0.0/0 dev lo table 100" in missing[0]
    assert "IPv6: no `ip rule`" in missing[1]
    assert "no nftables rule matches transparent sockets" in missing[2]

    uncapable = net.run(net.balancer, [*DROP_CAPS, *argv], env=env)
    assert uncapable.returncode == 1, uncapable.stdout + uncapable.stderr
    missing = [line for line in uncapable.stdout.splitlines() if line.strip().startswith("missing:")]
    assert "CAP_NET_ADMIN" in missing[0], uncapable.stdout
    # without the capability nftables cannot be read: said so, on one line
    assert "cannot read the nftables ruleset" in missing[-1], uncapable.stdout


def test_the_shipped_script_reports_and_removes_what_it_added(net: Farm) -> None:
    status = net.routing("status")
    assert status.returncode == 0, status.stdout + status.stderr
    bare = f"{net.tag}s"
    subprocess.run(["ip", "netns", "add", bare], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", bare, "link", "set", "lo", "up"], check=True, timeout=10)

        def script(action: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", bare, str(SCRIPT), action], capture_output=True, text=True,
                                  timeout=30, check=False)

        assert script("status").returncode == 1
        assert script("up").returncode == 0
        assert script("up").returncode == 0  # twice: nothing added twice
        rules = subprocess.run(["ip", "-n", bare, "rule"], capture_output=True, text=True, check=True).stdout
        assert rules.count("fwmark 0x1 lookup 100") == 1, rules
        assert script("status").returncode == 0
        assert script("down").returncode == 0
        assert script("status").returncode == 1
        listed = subprocess.run(["ip", "netns", "exec", bare, "nft", "-j", "list", "ruleset"], capture_output=True,
                                text=True, check=True).stdout
        assert "rdpbalancer_transparent" not in json.dumps(json.loads(listed))
    finally:
        subprocess.run(["ip", "netns", "del", bare], check=False, timeout=10)
