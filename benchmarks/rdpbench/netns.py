"""`run.py --netns`: the whole run inside fresh network namespaces with transparent mode's routing.

`--netns` (= `--netns lo`): the runner creates a namespace of its own (`rdpbench<pid>`), brings
its loopback up, runs the shipped contrib/transparent/rdpbalancer-transparent `up` in it (the
nftables `socket transparent 1` mark in prerouting, `ip rule fwmark 0x1 lookup 100`, `local
default dev lo table 100`), runs itself again inside it (`ip netns exec`), and deletes the
namespace afterwards, whatever happened. Every target of the run, with transparent mode on or
off, then pays the same prerouting hook, so the difference between rdpb1t and rdpb1 is the
transparent connect itself.

`--netns veth`: three namespaces, as a real deployment routes them (and as
tests/support/netns.py builds them for the functional tests):

    rdpbench<pid>c  (load generator)   c0 10.201.1.2/24, default via 10.201.1.1
                      |
    rdpbench<pid>   (runner, proxies)  b1 10.201.1.1/24   b2 10.201.2.1/24, forwarding on,
                                                            |             the transparent routing
    rdpbench<pid>h  (test server)                         h0 10.201.2.2/24, default via 10.201.2.1

The proxies listen on 10.201.1.1 and connect to the test server at 10.201.2.2; `direct` is
routed through the middle namespace. A transparent connect comes from 10.201.1.2, so the test
server's replies really take the mark, the `fwmark` rule and table 100 to reach the balancer.

Root only (`ip netns add`; the balancer needs CAP_NET_ADMIN for transparent sockets)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rdpbench.procs import BenchError

ROOT = Path(__file__).resolve().parents[2]
TRANSPARENT_SCRIPT = ROOT / "contrib" / "transparent" / "rdpbalancer-transparent"
IP_TIMEOUT_S = 30.0
LAYOUTS = ("lo", "veth")
VETH_NET = "10.201"  # 10.201.1.0/24 client side, 10.201.2.0/24 server side (our namespaces only)
# every namespace of the veth layout: the load generator's connections come from one address
# (C32 opens thousands a second), and the balancer's to the test server from one address too
VETH_SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65535"}


@dataclass(frozen=True)
class Net:
    """Where each party sits. By default all of them on 127.0.0.1 of the runner's namespace;
    with `--netns veth`, the load generator and the test server in namespaces of their own."""

    listen_host: str = "127.0.0.1"  # the proxies listen here (the runner's namespace)
    server_host: str = "127.0.0.1"  # the test server listens here
    client_ns: str | None = None  # the load generator runs here (None: the runner's namespace)
    server_ns: str | None = None  # the test server runs here

    def client(self, argv: Sequence[str]) -> list[str]:
        return _exec_in(self.client_ns, argv)

    def server(self, argv: Sequence[str]) -> list[str]:
        return _exec_in(self.server_ns, argv)


def _exec_in(ns: str | None, argv: Sequence[str]) -> list[str]:
    """`ip netns exec` replaces itself with the program: the PID the runner sees is the program's."""
    return list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]


def names(base: str) -> tuple[str, str, str]:
    """The veth layout's namespaces: balancer (the runner's, `base`), client, host."""
    return base, f"{base}c", f"{base}h"


def veth_net(base: str) -> Net:
    _, client, host = names(base)
    return Net(listen_host=f"{VETH_NET}.1.1", server_host=f"{VETH_NET}.2.2", client_ns=client, server_ns=host)


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)


def _must(argv: Sequence[str]) -> str:
    done = _run(argv)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def run_inside(layout: str, inner_argv: Sequence[str], progress: Callable[[str], None]) -> int:
    """Creates the namespace(s), runs `inner_argv` (run.py's arguments, with `--in-netns NAME`
    added) in the runner's, removes them. Returns the inner run's exit status."""
    if os.geteuid() != 0:
        raise BenchError("--netns needs root (ip netns add; transparent sockets need CAP_NET_ADMIN)")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            raise BenchError(f"--netns needs {tool} (apt-get install {package})")
    name = f"rdpbench{os.getpid()}"
    made: list[str] = []
    try:
        for ns in names(name) if layout == "veth" else (name,):
            _must(["ip", "netns", "add", ns])  # fails if it exists: never reuse someone else's namespace
            made.append(ns)
            _must(["ip", "-n", ns, "link", "set", "lo", "up"])
        if layout == "veth":
            _veth(name)
            progress(f"veth layout: load generator in {made[1]}, test server in {made[2]}, "
                     f"runner and proxies in {name} (routing between them)")
        _must(["ip", "netns", "exec", name, str(TRANSPARENT_SCRIPT), "up"])
        status = _must(["ip", "netns", "exec", name, str(TRANSPARENT_SCRIPT), "status"])
        progress(f"network namespace {name}: loopback up, transparent routing up "
                 f"({'; '.join(status.strip().splitlines())})")
        argv = ["ip", "netns", "exec", name, sys.executable, str(Path(sys.argv[0]).resolve()), *inner_argv,
                "--in-netns", name]
        return subprocess.run(argv, check=False).returncode
    finally:
        for ns in made:
            _remove(ns, progress)


def _veth(base: str) -> None:
    balancer, client, host = names(base)
    net = VETH_NET
    # created directly in their namespaces, so the short names meet no one else's
    _must(["ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "b1", "netns", balancer])
    _must(["ip", "link", "add", "b2", "netns", balancer, "type", "veth", "peer", "name", "h0", "netns", host])
    for ns, dev, address in ((client, "c0", f"{net}.1.2"), (balancer, "b1", f"{net}.1.1"),
                             (balancer, "b2", f"{net}.2.1"), (host, "h0", f"{net}.2.2")):
        _must(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev])
        _must(["ip", "-n", ns, "link", "set", dev, "up"])
    _must(["ip", "-n", client, "route", "add", "default", "via", f"{net}.1.1"])
    _must(["ip", "-n", host, "route", "add", "default", "via", f"{net}.2.1"])  # replies go back through us
    for ns in (balancer, client, host):
        for key, value in VETH_SYSCTLS.items():
            _must(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])
    _must(["ip", "netns", "exec", balancer, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def _remove(name: str, progress: Callable[[str], None]) -> None:
    """Anything still running in the namespace is a child of this run (the namespace is new):
    stopped by PID. Then the namespace goes, and with it its nftables table and rules."""
    left = [int(p) for p in _run(["ip", "netns", "pids", name]).stdout.split() if p.isdigit()]
    for pid in left:
        progress(f"network namespace {name}: process {pid} left behind, killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done = _run(["ip", "netns", "del", name])
    if done.returncode != 0:
        progress(f"could not delete network namespace {name}: {done.stderr.strip()} (ip netns del {name})")
    else:
        progress(f"network namespace {name} deleted")
