"""What the load goes through: nothing (direct), HAProxy (two variants) or rdpbalancer (1 or 2 workers).

A target turns the test server's ports into a running proxy with one listening port, pinned to
the proxy CPUs, and stops it again. Configurations are written from the templates below, which
are the whole of what each proxy is told.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdpbench.netns import TRANSPARENT_SCRIPT, Net
from rdpbench.procs import BenchError, free_port, pinned, stop, wait_accepting

ROOT = Path(__file__).resolve().parents[2]
POOL_NAME = "bench"
STICKY_MAX_ENTRIES = 2_000_000  # room for the S1M table; the other scenarios stay far below
RDPB_LOG_LEVEL = "warning"  # per-session info lines off: HAProxy runs without a log here too
START_TIMEOUT_S = 180.0  # loading a million sticky entries takes a while on a slow disk
FD_RESERVE = 200  # descriptors a proxy needs besides its sessions' sockets (listeners, files, epoll)
# splice-auto: HAProxy reserves 2 descriptors per pipe (default maxpipes = maxconn/4, which would
# not fit the 20,000 open-files hard limit beside M10k's sessions). A pipe is held only while a
# session has data in flight, so this is plenty for 8 bulk connections.
HAPROXY_MAXPIPES = 64

HAPROXY_TEMPLATE = """\
global
    nbthread 1
    maxconn {maxconn}
{extra_global}
defaults
    mode tcp
    timeout connect 4s
    timeout client 1h
    timeout server 1h
{extra_defaults}
frontend rdp
    bind {listen}:{port}
    tcp-request inspect-delay 2s
    tcp-request content accept if RDP_COOKIE
    default_backend farm

backend farm
    balance leastconn
    stick-table type string len 32 size 1m expire 8h
    stick on rdp_cookie(mstshash)
{servers}
"""

RDPB_TEMPLATE = """\
[balancer]
listen = ["{listen}:{port}"]
{balancer_extra}
[admin]
listen = "127.0.0.1:{admin_port}"

[sticky]
path = "{db}"
ttl = "8h"
max_entries = {max_entries}
sync = "{sync}"
{sticky_extra}
[log]
level = "{log_level}"

# The load generator is one client address opening thousands of connections a second; the
# HAProxy reference has no per-source limits configured either.
[limits]
max_connections = 1000000
max_handshakes = 1000000
per_source_connections = 1000000
per_source_rate = 10000000
per_source_burst = 1000000
new_users_per_source = 100000000

[[pool]]
name = "{pool}"
servers = [
{servers}
]
"""


def server_names(count: int) -> list[str]:
    return [f"TS{i + 1:02d}" for i in range(count)]


@dataclass(frozen=True)
class ProxyOptions:
    cpus: list[int]
    sync: str  # rdpbalancer [sticky] sync
    fd_limit: int
    rdpb_log_level: str = RDPB_LOG_LEVEL
    net: Net = field(default_factory=Net)  # where proxies listen and the test server is (--netns veth: not on loopback)


@dataclass
class Running:
    """A started proxy: where it listens, its process, how long it took to accept connections."""

    port: int
    proc: subprocess.Popen[bytes] | None  # None for the direct target: there is no proxy
    log: Path | None
    start_s: float
    # filled in by the target when the cell's load is over, before the proxy stops; added to the record
    notes: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where it listens (the test server's address for direct)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


class Target:
    name = ""
    kind = ""  # "direct", "haproxy" or "rdpb"
    description = ""

    def check(self, workdir: Path) -> str | None:
        """None if this target can run here, else why not (reported as "unsupported")."""
        return None

    @property
    def config_filename(self) -> str:
        return f"{self.name}.conf"

    def config(self, port: int, backends: list[int], opts: ProxyOptions, db: Path) -> str:
        raise NotImplementedError

    def argv(self, config_path: Path) -> list[str]:
        raise NotImplementedError

    @contextmanager
    def running(self, cell_dir: Path, backends: list[int], opts: ProxyOptions,
                db: Path | None = None) -> Iterator[Running]:
        port = free_port()
        cell_dir.mkdir(parents=True, exist_ok=True)
        config_path = cell_dir / self.config_filename
        config_path.write_text(self.config(port, backends, opts, db or cell_dir / "sticky.db"))
        log = cell_dir / f"{self.name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(pinned(opts.cpus, self.argv(config_path)), stdout=out, stderr=subprocess.STDOUT,
                                    env=child_env())
        try:
            start_s = wait_accepting(port, proc, START_TIMEOUT_S, log, host=opts.net.listen_host)
            yield Running(port=port, proc=proc, log=log, start_s=start_s, host=opts.net.listen_host)
        finally:
            stop(proc)


def child_env() -> dict[str, str]:
    """The runner's environment; the checkout's rdpbalancer first on the path."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


class Direct(Target):
    name, kind = "direct", "direct"
    description = "the load generator talks to the test server itself: the ceiling of this machine"

    @contextmanager
    def running(self, cell_dir: Path, backends: list[int], opts: ProxyOptions,
                db: Path | None = None) -> Iterator[Running]:
        yield Running(port=backends[0], proc=None, log=None, start_s=0.0, host=opts.net.server_host)


class HAProxy(Target):
    kind = "haproxy"

    def __init__(self, name: str, splice: bool) -> None:
        self.name = name
        self.splice = splice
        self.description = "HAProxy, nbthread 1, mode tcp, RDP cookie stickiness" + (
            ", option splice-auto" if splice else "")

    def check(self, workdir: Path) -> str | None:
        if shutil.which("haproxy") is None:
            raise BenchError("haproxy is not installed (Debian: apt-get install haproxy); it is the reference")
        config_path = workdir / f"check-{self.name}.cfg"
        config_path.write_text(self.config(free_port(), [1], ProxyOptions([], "full", 20_000), Path()))
        done = subprocess.run(["haproxy", "-c", "-q", "-f", str(config_path)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise BenchError(f"haproxy rejects the benchmark configuration:\n{done.stdout}{done.stderr}")
        return None

    def config(self, port: int, backends: list[int], opts: ProxyOptions, db: Path) -> str:
        servers = "\n".join(f"    server {name} {opts.net.server_host}:{p}"
                            for name, p in zip(server_names(len(backends)), backends, strict=True))
        pipes = HAPROXY_MAXPIPES if self.splice else 0
        return HAPROXY_TEMPLATE.format(
            maxconn=(opts.fd_limit - FD_RESERVE - 2 * pipes) // 2, listen=opts.net.listen_host, port=port,
            servers=servers,
            extra_global=f"    maxpipes {pipes}\n" if self.splice else "",
            extra_defaults="    option splice-auto\n" if self.splice else "",
        )

    def argv(self, config_path: Path) -> list[str]:
        return ["haproxy", "-db", "-f", str(config_path)]


class Rdpbalancer(Target):
    """rdpbalancer with its defaults (relay "auto", health checks, admin API on a free port)."""

    kind = "rdpb"

    def __init__(self, name: str, workers: int, relay: str | None = None, log_level: str | None = None,
                 commit_window: str | None = None) -> None:
        self.name = name
        self.commit_window = commit_window  # None: the product's default
        self.workers = workers
        self.relay = relay  # None: the product's default
        self.log_level = log_level  # None: RDPB_LOG_LEVEL (per-session lines off, as HAProxy's)
        self.description = (f"rdpbalancer from this checkout, {workers} worker{'s' if workers > 1 else ''}"
                            + (f", relay = {relay}" if relay else "")
                            + (f", log level {log_level} (to a file)" if log_level else "")
                            + (f", commit_window = {commit_window}" if commit_window else ""))

    def check(self, workdir: Path) -> str | None:
        """Runs `rdpbalancer check-config` on this target's configuration."""
        config_path = workdir / f"check-{self.name}.toml"
        config_path.write_text(self.config(free_port(), [1], ProxyOptions([], "full", 20_000), workdir / "x.db"))
        done = subprocess.run([sys.executable, "-m", "rdpbalancer", "check-config", "-c", str(config_path)],
                              capture_output=True, text=True, check=False, env=child_env(), timeout=60)
        if done.returncode == 0:
            return None
        return " ".join((done.stderr or done.stdout).split())

    def config(self, port: int, backends: list[int], opts: ProxyOptions, db: Path) -> str:
        servers = ",\n".join(f'  {{ name = "{name}", address = "{opts.net.server_host}:{p}", weight = 1 }}'
                             for name, p in zip(server_names(len(backends)), backends, strict=True))
        extra = [f"workers = {self.workers}"] if self.workers > 1 else []
        extra += [f'relay = "{self.relay}"'] if self.relay else []
        return RDPB_TEMPLATE.format(
            listen=opts.net.listen_host, port=port, admin_port=free_port(), db=db, max_entries=STICKY_MAX_ENTRIES,
            sync=opts.sync,
            log_level=self.log_level or opts.rdpb_log_level, pool=POOL_NAME, servers=servers,
            balancer_extra="\n".join(extra),
            sticky_extra=f'commit_window = "{self.commit_window}"' if self.commit_window else "",
        )

    def argv(self, config_path: Path) -> list[str]:
        return [sys.executable, "-m", "rdpbalancer", "run", "-c", str(config_path)]


class RdpbalancerTransparent(Rdpbalancer):
    """rdpb1 with `transparent = true` on its pool: every connection to a server is opened from
    the client's address (IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT, bind; a getsockname once
    connected). Needs CAP_NET_ADMIN and the routing of contrib/transparent/rdpbalancer-transparent
    (`run.py --netns` sets both up in a namespace of its own); without them it is "unsupported".
    After each cell the balancer's /metrics must say that every connection to a server came from
    the client's address (rdpbalancer_backend_connections_total{seen="client"}), else the cell
    fails: a row that silently measured the ordinary path would be worse than none."""

    def __init__(self, name: str) -> None:
        super().__init__(name, workers=1)
        self.description = "rdpbalancer from this checkout, 1 worker, transparent = true on the pool"
        self._admin_port = 0

    def check(self, workdir: Path) -> str | None:
        """The shipped script's `status` (the routing), then check-config (the capability, the routing)."""
        if shutil.which("nft") is None:
            return "nftables is not installed (apt-get install nftables): the routing transparent mode needs"
        done = subprocess.run([str(TRANSPARENT_SCRIPT), "status"], capture_output=True, text=True, check=False,
                              timeout=30)
        if done.returncode != 0:
            missing = "; ".join(line for line in done.stdout.splitlines() if "MISSING" in line)
            return (f"the routing transparent mode needs is not set up here ({missing or done.stderr.strip()}): "
                    "run with --netns, or contrib/transparent/rdpbalancer-transparent up")
        return super().check(workdir)

    def config(self, port: int, backends: list[int], opts: ProxyOptions, db: Path) -> str:
        text = super().config(port, backends, opts, db)
        self._admin_port = int(text.split('[admin]\nlisten = "127.0.0.1:', 1)[1].split('"', 1)[0])
        pool = f'[[pool]]\nname = "{POOL_NAME}"\n'
        assert pool in text
        return text.replace(pool, pool + "transparent = true\n", 1)

    @contextmanager
    def running(self, cell_dir: Path, backends: list[int], opts: ProxyOptions,
                db: Path | None = None) -> Iterator[Running]:
        with super().running(cell_dir, backends, opts, db) as run:
            yield run
            seen = self.backend_sources()
            run.notes.update({"backend_seen_client": seen.get("client", 0),
                              "backend_seen_balancer": seen.get("balancer", 0)})
            if seen.get("balancer", 0) or not seen.get("client", 0):
                raise BenchError(f"{self.name}: the transparent path did not run for every connection to a server "
                                 f"(rdpbalancer_backend_connections_total: {seen})")

    def backend_sources(self) -> dict[str, int]:
        """rdpbalancer_backend_connections_total by `seen`, from the admin API's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self._admin_port}/metrics", timeout=10) as response:
            body = response.read().decode()
        return {m.group(1): int(float(m.group(2))) for m in re.finditer(
            r'^rdpbalancer_backend_connections_total\{seen="([a-z]+)"\} (\S+)$', body, re.MULTILINE)}


class RdpbalancerDirectory(Rdpbalancer):
    """rdpb1 with 50 hosts in the pool (the test servers and idle ones with weight 0 that take
    nobody) and, with `directory`, the session directory on: each host pushes 100 sessions of
    other users right after the start. Every connection's decision reads the directory; none is
    found there (C32's users are new), the costlier path (bench_directory.py). rdpb1-50 is the same
    pool without it: the pair isolates the directory's cost from the pool's size."""

    HOSTS, SESSIONS = 50, 100

    def __init__(self, name: str, *, directory: bool) -> None:
        super().__init__(name, workers=1)
        self.directory = directory
        self.description = f"rdpbalancer from this checkout, 1 worker, {self.HOSTS} hosts" + (
            f", session directory with {self.SESSIONS} sessions each" if directory else ", no session directory")
        self._admin_port = 0

    def config(self, port: int, backends: list[int], opts: ProxyOptions, db: Path) -> str:
        text = super().config(port, backends, opts, db)
        self._admin_port = int(text.split('[admin]\nlisten = "127.0.0.1:', 1)[1].split('"', 1)[0])
        # idle hosts: loopback addresses nothing listens on, never connected to (weight 0, no checks)
        idle = ",\n".join(f'  {{ name = "DIR{i:02d}", address = "127.0.1.{i + 1}:3389", weight = 0, '
                           'check = "none" }' for i in range(self.HOSTS - len(backends)))
        tokens = db.parent / "push-tokens.toml"
        tokens.write_text("".join(f'{name} = "{self._token(name)}"\n' for name in self._hosts(len(backends))))
        tokens.chmod(0o600)
        text = text.replace("\n]\n", f",\n{idle}\n]\n", 1) if idle else text
        if not self.directory:
            return text
        return text + f'\n[sessions]\nsource = "push"\npush_tokens = "{tokens}"\nstale_after = "1h"\n'

    def _hosts(self, real: int) -> list[str]:
        return server_names(real) + [f"DIR{i:02d}" for i in range(self.HOSTS - real)]

    @staticmethod
    def _token(name: str) -> str:
        return f"bench-push-token-{name.lower()}"

    @contextmanager
    def running(self, cell_dir: Path, backends: list[int], opts: ProxyOptions,
                db: Path | None = None) -> Iterator[Running]:
        with super().running(cell_dir, backends, opts, db) as run:
            if not self.directory:
                yield run
                return
            wait_accepting(self._admin_port, run.proc, START_TIMEOUT_S, run.log)  # the API starts after the listeners
            for h, name in enumerate(self._hosts(len(backends))):
                body = json.dumps({"sessions": [{"user": f"dir{h}-{i}", "id": str(i)}
                                                for i in range(self.SESSIONS)]}).encode()
                request = urllib.request.Request(f"http://127.0.0.1:{self._admin_port}/api/v1/hosts/{name}/sessions",
                                                 data=body, method="PUT")
                request.add_header("Authorization", f"Bearer {self._token(name)}")
                request.add_header("Content-Type", "application/json")
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
            yield run


ALL_TARGETS: dict[str, Target] = {
    t.name: t for t in (
        Direct(),
        HAProxy("haproxy", splice=False),
        HAProxy("haproxy-splice", splice=True),
        Rdpbalancer("rdpb1", workers=1),
        Rdpbalancer("rdpb2", workers=2),
        Rdpbalancer("rdpb1-log", workers=1, log_level="info"),
        Rdpbalancer("rdpb1-cw0", workers=1, commit_window="0ms"),  # group commit without a window
        Rdpbalancer("rdpb1-copy", workers=1, relay="copy"),  # opt-in: the asyncio Protocol relay
        RdpbalancerTransparent("rdpb1t"),  # opt-in: transparent = true (needs --netns, or the routing and root)
        RdpbalancerDirectory("rdpb1-50", directory=False),  # opt-in: 50 hosts, the baseline of rdpb1-dir
        RdpbalancerDirectory("rdpb1-dir", directory=True),  # opt-in: the session directory's cost per connection
    )
}
DEFAULT_TARGETS = ["direct", "haproxy", "haproxy-splice", "rdpb1", "rdpb2"]
