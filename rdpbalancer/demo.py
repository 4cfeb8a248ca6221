"""`rdpbalancer demo`: a simulated farm behind the real balancer, on loopback, in one command.

Three session hosts (TS01-TS03) that answer a real X.224 Connection Confirm, the balancer (in
this process, with the admin API and dashboard), and a dozen users who log on, hold their session
a few seconds, log off and come back. About 20 s in, the host with the most users stops
accepting connections; about 20 s later it is back (and again every minute, another host each
time). So the first minute shows balancing of new users, stickiness of returning ones, failover
once the host has been down for `failover_after`, and recovery. Ctrl-C or SIGTERM stops
everything the demo started and removes its temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdpbalancer import tasks
from rdpbalancer.proto import (
    PROTOCOL_SSL,
    ClientHandshake,
    ConnectionRequestReceived,
    ProtocolError,
    build_connection_confirm,
    build_connection_request,
)
from rdpbalancer.runtime import loop_factory, positive_seconds

if TYPE_CHECKING:
    from rdpbalancer.app import Balancer

log = logging.getLogger("rdpbalancer.demo")

DESCRIPTION = ("A simulated farm behind the real balancer, on loopback: three session hosts, a dozen users "
               "logging on and off, a host failure and its recovery. Prints the dashboard URL and admin token.")

HOST = "127.0.0.1"  # loopback only: the demo never listens on a reachable address
DEFAULT_RDP_PORT = 13389  # 3389 needs root and is likely taken; this one is easy to remember
DEFAULT_ADMIN_PORT = 9000  # the admin API's default ([admin] listen)
HOSTS = ("TS01", "TS02", "TS03")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan")  # arrive at the start
NEWCOMERS = ("judy", "oscar", "peggy")  # arrive after the first outage: the recovered host gets them
FIRST_LOGONS_WITHIN_S = 4.0  # users arrive one by one over the first seconds
NEWCOMER_GAP_S = 2.0  # newcomers arrive this far apart, from a few seconds after the recovery
HOLD_S = (3.0, 6.0)  # how long a user stays logged on
AWAY_S = (2.0, 5.0)  # how long before they come back
RETRY_S = (1.0, 2.0)  # a client whose connection was closed retries soon, as mstsc does
OUTAGE_START_S = 20.0  # a host fails this long after the start...
OUTAGE_LENGTH_S = 20.0  # ...and is back this much later
OUTAGE_PERIOD_S = 60.0  # then again every minute, the next host with the most users
FAILOVER_AFTER = "5s"  # shorter than the 60 s default so failover shows within the outage
IO_TIMEOUT_S = 5.0  # for every demo connect, handshake and read
MAX_HOLD_S = 600.0  # a simulated host drops a session it has held this long
MAX_LOGONS_PER_USER = 20_000  # bounds each user's loop: about a day at one logon every 5 s
MAX_OUTAGES = 1_500  # bounds the outage loop: about a day


# -- simulated session hosts --------------------------------------------------------------------------

@dataclass
class DemoHost:
    """A session host that answers a real Connection Confirm, then its name, then holds the session."""

    name: str
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> DemoHost:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def listening(self) -> bool:
        return self._server is not None

    def stop_listening(self) -> None:
        """A host that no longer accepts connections; its live sessions go on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        self.stop_listening()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            async with asyncio.timeout(IO_TIMEOUT_S):
                request_seen = await _read_connection_request(reader)
            if request_seen:
                writer.write(build_connection_confirm(PROTOCOL_SSL) + self.name.encode() + b"\n")
                async with asyncio.timeout(MAX_HOLD_S):
                    while await reader.read(65536):  # until the client logs off
                        pass
        except (ConnectionError, ProtocolError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


async def _read_connection_request(reader: asyncio.StreamReader) -> bool:
    handshake = ClientHandshake()
    while True:
        data = await reader.read(4096)
        handshake.receive_data(data)
        if isinstance(handshake.next_event(), ConnectionRequestReceived):
            return True
        if not data:
            return False


# -- simulated users ----------------------------------------------------------------------------------

@dataclass
class Farm:
    """What the users' stories need to know: the balancer's port and which hosts are failing."""

    rdp_port: int
    hosts: dict[str, DemoHost]

    def is_down(self, name: str | None) -> bool:
        return name is not None and name in self.hosts and not self.hosts[name].listening


async def logon(port: int, user: str) -> tuple[asyncio.StreamWriter, str] | None:
    """Connect through the balancer; the host that answered, or None if the balancer closed us."""
    writer = None
    try:
        async with asyncio.timeout(IO_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(build_connection_request(cookie=user.encode()))
            header = await reader.readexactly(4)  # TPKT ([T.123] 8): version, reserved, length
            await reader.readexactly(int.from_bytes(header[2:4], "big") - 4)
            server = (await reader.readline()).decode().strip()
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        if writer is not None:
            writer.transport.abort()
        return None
    return writer, server


def arrivals(rng: random.Random) -> dict[str, float]:
    """When each user first logs on, in seconds from the start."""
    early = {user: rng.uniform(0, FIRST_LOGONS_WITHIN_S) for user in USERS}
    after_recovery = OUTAGE_START_S + OUTAGE_LENGTH_S + 3.0  # the host needs `rise` checks to be up
    return early | {user: after_recovery + i * NEWCOMER_GAP_S for i, user in enumerate(NEWCOMERS)}


async def user_story(user: str, arrival_s: float, farm: Farm, rng: random.Random) -> None:
    """One user, again and again: log on, hold the session, log off, come back."""
    await asyncio.sleep(arrival_s)
    last: str | None = None
    for _ in range(MAX_LOGONS_PER_USER):
        connected = await logon(farm.rdp_port, user)
        if connected is None:
            log.info("%-8s closed without an answer: %s", user, _why_closed(last, farm))
            await asyncio.sleep(rng.uniform(*RETRY_S))
            continue
        writer, server = connected
        log.info("%-8s logs on  -> %s  %s", user, server, _why_there(last, server, farm))
        last = server
        try:
            await asyncio.sleep(rng.uniform(*HOLD_S))
        finally:
            writer.transport.abort()
        await asyncio.sleep(rng.uniform(*AWAY_S))


def _why_there(last: str | None, server: str, farm: Farm) -> str:
    if last is None:
        return "(new user: the least loaded host)"
    if last == server:
        return "(sticky: back to the same host)"
    if farm.is_down(last):
        return f"(failover: moved from {last}, which is down)"
    return f"(moved from {last})"


def _why_closed(last: str | None, farm: Farm) -> str:
    if farm.is_down(last):
        return (f"their host {last} is down; their session lives there, so the balancer waits "
                f"failover_after = {FAILOVER_AFTER} before moving them (the client retries)")
    return "no host for them (the client retries)"


async def outages(farm: Farm, homed: Callable[[str], int]) -> None:
    """A host stops accepting connections ~20 s in and comes back 20 s later; then every minute."""
    await asyncio.sleep(OUTAGE_START_S)
    for _ in range(MAX_OUTAGES):
        victim = max(farm.hosts.values(), key=lambda h: homed(h.name))
        log.warning("*** %s stops accepting connections (%d users are homed there); back in %.0f s",
                    victim.name, homed(victim.name), OUTAGE_LENGTH_S)
        victim.stop_listening()
        await asyncio.sleep(OUTAGE_LENGTH_S)
        try:
            await victim.start()
        except OSError as exc:  # its port was taken meanwhile: it stays down
            log.error("*** %s cannot listen again: %s", victim.name, exc)
            return
        log.warning("*** %s accepts connections again", victim.name)
        await asyncio.sleep(OUTAGE_PERIOD_S - OUTAGE_LENGTH_S)


# -- the balancer's configuration --------------------------------------------------------------------------

def demo_config(workdir: Path, hosts: Sequence[DemoHost], rdp_port: int, admin_port: int) -> str:
    rows = ",\n".join(f'  {{ name = "{h.name}", address = "{HOST}:{h.port}" }}' for h in hosts)
    return f"""\
# written by `rdpbalancer demo`: {len(hosts)} simulated hosts on loopback
[balancer]
listen = ["{HOST}:{rdp_port}"]

[sticky]
path = "{workdir / 'sticky.db'}"
sync = "normal"

[health]
check = "rdp"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
failover_after = "{FAILOVER_AFTER}"

[admin]
listen = "{HOST}:{admin_port}"
token_file = "{workdir / 'admin.token'}"

[[pool]]
name = "farm"
servers = [
{rows}
]
"""


def write_token(path: Path) -> str:
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the API refuses a readable token file
    with open(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token


def port_or_any(port: int) -> int:
    """`port` if it is free on loopback, else 0 (any free port)."""
    if port == 0:
        return 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            log.info("port %d is busy: using a free port instead", port)
            return 0
    return port


# -- the run ------------------------------------------------------------------------------------------------

@dataclass
class Demo:
    workdir: Path
    rdp_port: int
    admin_port: int
    verbose: bool = False
    hosts: dict[str, DemoHost] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    balancer: Balancer | None = None

    async def start(self) -> None:
        for name in HOSTS:
            self.hosts[name] = await DemoHost(name).start()
        self.balancer = await self._start_balancer()
        farm = Farm(self.balancer.addresses[0][1], self.hosts)
        rng = random.Random()
        self.tasks = [tasks.start(user_story(user, arrival, farm, random.Random(rng.random())), name=f"user-{user}")
                      for user, arrival in arrivals(rng).items()]
        self.tasks.append(tasks.start(outages(farm, self.balancer.table.homed), name="outages"))

    async def _start_balancer(self) -> Balancer:
        # imported here: the balancer's stack (aiohttp, pydantic, ...) is loaded only when the demo runs
        from rdpbalancer.app import Balancer  # noqa: PLC0415
        from rdpbalancer.config import load_config  # noqa: PLC0415
        from rdpbalancer.relay.listener import ListenError  # noqa: PLC0415

        ports = (port_or_any(self.rdp_port), port_or_any(self.admin_port))
        for attempt in (ports, (0, 0)):  # a port taken between the probe and the bind: any port
            path = self.workdir / "config.toml"
            path.write_text(demo_config(self.workdir, list(self.hosts.values()), *attempt), encoding="utf-8")
            balancer = Balancer(load_config(path))
            try:
                await balancer.start()
            except ListenError as exc:
                log.info("%s: using free ports instead", exc)
                continue
            return balancer
        raise RuntimeError("cannot listen on loopback")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.balancer is not None:
            await self.balancer.stop()
        for host in self.hosts.values():
            await host.close()

    def banner(self, token: str) -> str:
        assert self.balancer is not None
        rdp = f"{HOST}:{self.balancer.addresses[0][1]}"
        admin = f"http://{HOST}:{self.balancer.admin.port}"
        return "\n".join([
            f"rdpbalancer demo: {len(HOSTS)} simulated session hosts, {len(USERS) + len(NEWCOMERS)} users; "
            f"a host fails ~{OUTAGE_START_S:.0f} s in and is back ~{OUTAGE_LENGTH_S:.0f} s later",
            f"  balancer: {rdp}",
            f"  dashboard: {admin}/",
            f"  token: {token}",
            f"  state: {self.workdir}  (removed on exit)",
            f"  try: rdpbalancer ctl --url {admin} --token-file {self.workdir / 'admin.token'} servers",
            "Ctrl-C stops the demo.",
        ])


async def run(args: argparse.Namespace) -> int:
    # imported here, as in _start_balancer
    from rdpbalancer.relay.listener import ListenError  # noqa: PLC0415
    from rdpbalancer.store import StoreError  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="rdpbalancer-demo-"))
    demo = Demo(workdir, args.port, args.admin_port, args.verbose)
    stop = asyncio.Event()
    restore = _on_stop_signals(stop.set)
    try:
        token = write_token(workdir / "admin.token")
        await demo.start()
        print(demo.banner(token), flush=True)
        if args.duration is not None:
            asyncio.get_running_loop().call_later(args.duration, stop.set)
        await stop.wait()
        log.info("stopping the demo")
    except (ListenError, StoreError, RuntimeError, OSError) as exc:
        log.error("the demo cannot start: %s", exc)
        return 1
    finally:
        await demo.stop()
        restore()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _on_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """SIGINT and SIGTERM call `callback`; returns the function that removes the handlers."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)

    def restore() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return restore


# -- command line -------------------------------------------------------------------------------------------

def add_demo_parser(sub: Any) -> None:
    """Add `demo` to the subcommands of `rdpbalancer` (cli.py); `run_demo` runs the parsed arguments."""
    _configure(sub.add_parser("demo", help="a simulated farm behind the balancer, on loopback",
                              description=DESCRIPTION))


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=_port, default=DEFAULT_RDP_PORT,
                        help=f"RDP port of the balancer (default {DEFAULT_RDP_PORT}, a free one if busy; 0 = any)")
    parser.add_argument("--admin-port", type=_port, default=DEFAULT_ADMIN_PORT,
                        help=f"port of the dashboard and admin API (default {DEFAULT_ADMIN_PORT}, "
                             "a free one if busy; 0 = any)")
    parser.add_argument("--duration", type=positive_seconds, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also log the balancer's line for every session")


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, not {text!r}")
    return int(text)


def run_demo(args: argparse.Namespace) -> int:
    from rdpbalancer.logs import setup_logging  # noqa: PLC0415

    setup_logging("info")
    if not args.verbose:  # one line per logon comes from the demo itself
        logging.getLogger("rdpbalancer.session").setLevel(logging.WARNING)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(run(args))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """`rdpbalancer demo ...` without cli.py."""
    parser = argparse.ArgumentParser(prog="rdpbalancer demo", description=DESCRIPTION)
    _configure(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return run_demo(args)
