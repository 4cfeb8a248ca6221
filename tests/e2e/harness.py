"""End-to-end harness: real xrdp servers, the real xfreerdp client and the balancer as a subprocess.

What it starts (once per pytest session, see ``conftest.py``):

* an Xvfb display for the clients (``-displayfd`` lets the X server pick a free display number);
* ``xrdp-sesman --nodaemon`` with a config of its own, on a random 127.x.y.z address (see
  :func:`start_sesman` for why the address and not the port);
* three ``xrdp --nodaemon --config FILE`` servers on 127.0.0.1, one free port, config, log file and
  working directory each.  In ``--nodaemon`` mode xrdp (and sesman) write no pid file, so any number of
  them can run side by side; they only *refuse to start* when the pid file of a system daemon exists.

What "connected" means: xrdp logs ``Connected client computer name: NAME`` when it parses the MCS
Connect Initial (GCC Client Core Data) of a client.  That PDU travels inside TLS, right after the
X.224 negotiation and the TLS handshake, so the line proves the client got through negotiation and
TLS to that very server.  With ``/client-hostname:NAME`` unique per connection, exactly one of the
three logs names the client: that is :meth:`XrdpFarm.which_server`.  After that xrdp auto-logs on with
the given credentials, sesman rejects them (no such Unix user) and the client stays connected at the
xrdp login screen until :meth:`ClientResult.close` terminates it.

Every wait has a deadline, every process is started in its own session and stopped by its PID only
(SIGTERM, then SIGKILL after a grace period).

Outages: :meth:`XrdpFarm.server_stopped` stops one xrdp for a ``with`` block (its port is free when
the block starts) and starts it again on the same port afterwards, even when the block fails, so the
session's farm is whole for the next test.  :meth:`XrdpFarm.start_server` inside the block brings it
back early (to watch a recovery).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

LOCALHOST = "127.0.0.1"
REQUIRED_BINARIES = ("Xvfb", "xrdp", "xrdp-sesman", "xfreerdp", "stdbuf", "openssl")
INSTALL_HINT = "install them with: sudo scripts/install-test-deps.sh"
SERVER_NAMES = ("xrdp1", "xrdp2", "xrdp3")
REPO_ROOT = Path(__file__).resolve().parents[2]

# xrdp 0.9 always dials sesman at the ListenPort of this file; only the address comes from xrdp.ini.
SYSTEM_SESMAN_INI = Path("/etc/xrdp/sesman.ini")
DEFAULT_SESMAN_PORT = 3350
# Even with --nodaemon, xrdp and xrdp-sesman exit at once when these exist (a system daemon runs).
SYSTEM_PID_FILES = (Path("/var/run/xrdp/xrdp.pid"), Path("/var/run/xrdp/xrdp-sesman.pid"))

COMPUTER_NAME_RE = re.compile(r"Connected client computer name: (.*)$")
# The RDP clientName field holds 15 characters at most; xrdp would log a truncated name.
CLIENT_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$")

# Options that keep xfreerdp light.  Its start-up is dominated by a fixed ~0.3 s primitives
# benchmark in libfreerdp; these only trim the rest.  Do not disable all channels on the server
# (allow_channels=false): FreeRDP then aborts in MCS channel join and reconnects.
CLIENT_OPTIONS = (
    "/cert:ignore",
    "/log-level:INFO",
    "-clipboard",
    "/audio-mode:2",
    "/size:640x480",
    "/bpp:16",
    "-gfx",
    "-themes",
    "-wallpaper",
)

STOP_GRACE_SECONDS = 3.0
TCP_LISTEN = "0A"
POLL_INTERVAL = 0.02


class HarnessError(RuntimeError):
    """The end-to-end environment could not be set up or did not behave."""


class ClientConnectError(HarnessError):
    """xfreerdp did not reach an xrdp server (no 'Connected client computer name' line)."""


# --------------------------------------------------------------------------- small helpers


def find_missing_binaries(names: Sequence[str] = REQUIRED_BINARIES) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def require_binaries(names: Sequence[str] = REQUIRED_BINARIES) -> None:
    missing = find_missing_binaries(names)
    if missing:
        raise HarnessError(
            f"e2e tests need these programs, not found on PATH: {', '.join(missing)}; {INSTALL_HINT}"
        )


def require_no_system_xrdp(pid_files: Sequence[Path] = SYSTEM_PID_FILES) -> None:
    present = [str(path) for path in pid_files if path.exists()]
    if present:
        raise HarnessError(
            f"pid file(s) {', '.join(present)} exist:"
            " a system xrdp/xrdp-sesman is running (or died uncleanly)."
            " xrdp refuses to start while they exist, even with --nodaemon."
            " Stop it (systemctl stop xrdp xrdp-sesman) or remove stale pid files."
        )


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll ``probe`` until it returns something other than None; ``check`` may raise to give up early."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


_HELD: list[socket.socket] = []


def held_port(host: str = LOCALHOST) -> int:
    """A port for a process that must be told it before it starts (xrdp does not report a port it
    took; a balancer restarts on the same address): bound with SO_REUSEADDR, not listening, and
    held until the test session ends, so that no port-0 bind and no outgoing connection takes it
    (a port bound and closed again can be taken), while the process, which sets SO_REUSEADDR
    too, binds and listens on it; see tests.support.balancer.hold_port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    _HELD.append(sock)
    return int(sock.getsockname()[1])


@atexit.register
def _release_held_ports() -> None:
    while _HELD:
        _HELD.pop().close()



def can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def can_connect(host: str, port: int, timeout: float = 0.25) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of a file another process is appending to."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return lines[:-1]  # the last element is '' or a partly written line


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """A child process with its stdout+stderr in a log file; stopped by PID only."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise HarnessError(f"cannot start {name}: {self.argv[0]}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.exit_code is None

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"

    def output_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def ensure_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise HarnessError(
                f"{self.describe()} exited with status {code};"
                f" its output ({self.log_path}):\n{self.output_tail()}"
            )

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)  # a no-op once the process has been reaped

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"{self.describe()} still running {timeout:.1f}s after it was told to stop"
            ) from exc

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        try:
            if self.running:
                self.popen.terminate()
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
            return self.popen.wait(10.0)
        finally:
            self._log.close()


def _decode_proc_address(hex_address: str) -> str:
    """/proc/net/tcp{,6} addresses: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    address = ipaddress.IPv6Address(packed)
    return str(address.ipv4_mapped or address)


def listening_sockets() -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state, from /proc/net (Linux)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        with contextlib.suppress(FileNotFoundError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == TCP_LISTEN:
                    hex_address, hex_port = fields[1].split(":")
                    found.add((_decode_proc_address(hex_address), int(hex_port, 16)))
    return found


def is_listening(host: str, port: int) -> bool:
    return bool({(host, port), ("0.0.0.0", port), ("::", port)} & listening_sockets())


def wait_listening(
    host: str, port: int, process: ManagedProcess, timeout: float, *, probe: bool = False
) -> None:
    """Wait for a listening socket: by /proc/net (no side effect) or, with ``probe``, a TCP connect."""
    ready = can_connect if probe else is_listening
    wait_for(
        lambda: True if ready(host, port) else None,
        timeout=timeout,
        what=f"{process.describe()} to listen on {host}:{port}",
        check=process.ensure_running,
    )


# --------------------------------------------------------------------------- Xvfb


@dataclass
class XvfbDisplay:
    display: str
    process: ManagedProcess


def _read_display_number(read_fd: int, process: ManagedProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        process.ensure_running()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HarnessError(
                f"timed out after {timeout:.1f}s waiting for {process.describe()} to pick a display"
            )
        ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.1))
        if ready:
            chunk = os.read(read_fd, 64)
            if not chunk:
                process.ensure_running()
                raise HarnessError(f"{process.describe()} closed -displayfd without a display number")
            data += chunk
    return int(data.strip())


def start_xvfb(workdir: Path, timeout: float = 15.0) -> XvfbDisplay:
    read_fd, write_fd = os.pipe()
    try:
        argv = ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"]
        process = ManagedProcess("Xvfb", argv, workdir / "xvfb.log", pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
    try:
        number = _read_display_number(read_fd, process, timeout)
        sock = Path(f"/tmp/.X11-unix/X{number}")
        wait_for(
            lambda: True if sock.exists() else None,
            timeout=timeout,
            what=f"X socket {sock}",
            check=process.ensure_running,
        )
    except BaseException:
        process.stop()
        raise
    finally:
        os.close(read_fd)
    return XvfbDisplay(display=f":{number}", process=process)


# --------------------------------------------------------------------------- TLS certificate


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    # An EC key: generated in ~10 ms, where RSA-2048 takes 0.2-0.6 s.  xrdp and FreeRDP take it for TLS.
    argv = [
        "openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=rdpbalancer-e2e",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    try:
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"openssl failed: {exc.stderr.decode(errors='replace')}") from exc
    except subprocess.TimeoutExpired as exc:
        raise HarnessError("openssl took more than 60s to make a certificate") from exc
    return cert, key


# --------------------------------------------------------------------------- sesman


@dataclass
class Sesman:
    address: str
    port: int
    log_path: Path
    process: ManagedProcess


def system_sesman_port(path: Path = SYSTEM_SESMAN_INI) -> int:
    """The port xrdp will dial sesman on: [Globals] ListenPort of /etc/xrdp/sesman.ini."""
    section = ""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return DEFAULT_SESMAN_PORT
    for raw in lines:
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Globals]" and line.split("=", 1)[0].strip() == "ListenPort":
            value = line.split("=", 1)[1].strip()
            if not value.isdigit():
                raise HarnessError(f"{path}: ListenPort={value!r} is not a TCP port; the harness needs one")
            return int(value)
    return DEFAULT_SESMAN_PORT


def pick_loopback_address(port: int, attempts: int = 50) -> str:
    """A random 127.x.y.z (never 127.0.0.1, where a system sesman would listen) with ``port`` free."""
    rng = random.Random()
    for _ in range(attempts):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if can_bind(address, port):
            return address
    raise HarnessError(
        f"port {port} is taken on every loopback address tried (a sesman listening on a wildcard?)"
    )


SESMAN_INI = """\
[Globals]
ListenAddress={address}
ListenPort={port}
EnableUserWindowManager=true
UserWindowManager=startwm.sh
DefaultWindowManager=startwm.sh
ReconnectScript=reconnectwm.sh

[Security]
AllowRootLogin=false
MaxLoginRetry=4
AlwaysGroupCheck=false

[Sessions]
X11DisplayOffset=10
MaxSessions=50
KillDisconnected=true
DisconnectedTimeLimit=0
IdleTimeLimit=0
Policy=Default

[Logging]
LogFile={log}
LogLevel=INFO
EnableSyslog=false

[Xorg]
param=Xorg

[Xvnc]
param=Xvnc

[Chansrv]
FuseMountName=thinclient_drives

[ChansrvLogging]
LogLevel=INFO
EnableSyslog=false

[SessionVariables]
"""


def start_sesman(workdir: Path, timeout: float = 15.0) -> Sesman:
    """xrdp-sesman on its own loopback address.

    xrdp connects to sesman at ``ip=`` of the xrdp.ini module section but always at the port of
    /etc/xrdp/sesman.ini, so a private sesman differs from a system one by address, not by port.
    Without any sesman an auto-logon hangs ~15 s in xrdp's connect retries.
    """
    port = system_sesman_port()
    address = pick_loopback_address(port)
    config = workdir / "sesman.ini"
    log_path = workdir / "sesman.log"
    config.write_text(SESMAN_INI.format(address=address, port=port, log=log_path))
    argv = ["xrdp-sesman", "--nodaemon", "--config", str(config)]
    process = ManagedProcess("xrdp-sesman", argv, workdir / "sesman.out", cwd=workdir)
    try:
        wait_listening(address, port, process, timeout)
    except BaseException:
        process.stop()
        raise
    return Sesman(address=address, port=port, log_path=log_path, process=process)


# --------------------------------------------------------------------------- xrdp servers


XRDP_INI = """\
[Globals]
ini_version=1
fork=false
port=tcp://{host}:{port}
use_vsock=false
tcp_nodelay=true
tcp_keepalive=true
security_layer=negotiate
crypt_level=high
certificate={cert}
key_file={key}
ssl_protocols=TLSv1.2, TLSv1.3
autorun=
allow_channels=true
allow_multimon=false
bitmap_cache=true
bitmap_compression=true
bulk_compression=true
max_bpp=16
new_cursors=true
use_fastpath=both

[Logging]
LogFile={log}
LogLevel=INFO
EnableSyslog=false
EnableConsole=false

[Channels]
rdpdr=true
rdpsnd=true
drdynvc=true
cliprdr=true
rail=true
xrdpvr=true
tcutils=true

[Xorg]
name=Xorg
lib=libxup.so
username=ask
password=ask
ip={sesman_address}
port=-1
code=20
"""


@dataclass
class XrdpServer:
    name: str
    host: str
    port: int
    workdir: Path
    log_path: Path
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.name} ({self.address}, pid {self.process.pid})"

    def stop(self) -> None:
        self.process.stop()

    def computer_names(self) -> list[str]:
        names = []
        for line in complete_lines(self.log_path):
            match = COMPUTER_NAME_RE.search(line)
            if match:
                names.append(match.group(1).strip())
        return names


def _launch_xrdp(
    name: str,
    workdir: Path,
    cert: Path,
    key: Path,
    sesman: Sesman,
    timeout: float,
    port: int | None = None,
    *,
    probe: bool = False,
) -> XrdpServer:
    """One xrdp on ``port`` (a free one when None); its log file is appended to, never truncated.

    ``probe``: wait for it with a TCP connect rather than by reading /proc/net/tcp (see
    :func:`wait_listening`).
    """
    port = held_port() if port is None else port
    log_path = workdir / "xrdp.log"
    config = workdir / "xrdp.ini"
    config.write_text(
        XRDP_INI.format(
            host=LOCALHOST, port=port, cert=cert, key=key, log=log_path, sesman_address=sesman.address
        )
    )
    argv = ["xrdp", "--nodaemon", "--config", str(config)]
    process = ManagedProcess(name, argv, workdir / "xrdp.out", cwd=workdir)
    try:
        wait_listening(LOCALHOST, port, process, timeout, probe=probe)
    except BaseException:
        process.stop()
        raise
    return XrdpServer(
        name=name, host=LOCALHOST, port=port, workdir=workdir, log_path=log_path, process=process
    )


def start_xrdp(
    name: str, workdir: Path, cert: Path, key: Path, sesman: Sesman, timeout: float = 15.0, attempts: int = 3
) -> XrdpServer:
    """One xrdp server on a free 127.0.0.1 port (retried if another process grabs the port first)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            return _launch_xrdp(name, workdir, cert, key, sesman, timeout)
        except HarnessError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


@dataclass
class XrdpFarm:
    servers: list[XrdpServer]
    sesman: Sesman
    cert: Path
    key: Path
    stopped: set[str] = field(default_factory=set)  # names of servers a test stopped on purpose

    def server(self, name: str) -> XrdpServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def stop_server(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop one xrdp with ``sig`` (by its PID; SIGKILL after a grace period) and return once it
        has exited and nothing listens on its port any more.

        SIGKILL is a crash: the port closes at once.  On SIGTERM xrdp 0.9 takes 0.1-0.4 s here
        (more under load) and may stop answering before it exits, so a test timing an outage
        should kill.
        """
        server = self.server(name)
        self.stopped.add(name)
        server.process.send_signal(sig)
        server.process.stop()
        # A refused connect, not /proc/net/tcp: that file can hold tens of thousands of TIME_WAIT
        # lines on a machine running benchmarks, and each read then takes a good part of a second.
        wait_for(
            lambda: None if can_connect(server.host, server.port) else True,
            timeout=timeout,
            what=f"{server.name}'s port {server.address} to be released",
        )

    def start_server(self, name: str, timeout: float = 15.0) -> None:
        """Start a stopped xrdp again on the same address, port, config and (appended) log."""
        server = self.server(name)
        if server.process.running:
            raise HarnessError(f"{server.describe()} is already running")
        try:
            # probe: /proc/net/tcp can be slow to read (see stop_server), and a connect without
            # data is nothing to an xrdp that balancer health checks may be probing anyway.
            restarted = _launch_xrdp(
                name, server.workdir, self.cert, self.key, self.sesman, timeout, port=server.port, probe=True
            )
        except HarnessError as exc:
            raise HarnessError(f"cannot restart {name} on {server.address}: {exc}") from None
        server.process = restarted.process
        self.stopped.discard(name)

    @contextlib.contextmanager
    def server_stopped(self, name: str, sig: int = signal.SIGTERM) -> Iterator[XrdpServer]:
        """Stop ``name`` for the block; it runs again (same port) afterwards, even if the block fails.

        The block may call :meth:`start_server` itself (to watch the recovery): it is not started twice.
        """
        self.stop_server(name, sig)
        try:
            yield self.server(name)
        finally:
            if name in self.stopped:
                self.start_server(name)

    def locate(self, client_hostname: str) -> list[str]:
        """Names of the servers whose log says this client computer connected."""
        return [server.name for server in self.servers if client_hostname in server.computer_names()]

    def which_server(self, client_hostname: str) -> str | None:
        found = self.locate(client_hostname)
        if len(found) > 1:
            raise HarnessError(f"client {client_hostname!r} appears in several server logs: {found}")
        return found[0] if found else None

    def ensure_running(self) -> None:
        """Raise if sesman or a server died; servers stopped on purpose (:meth:`stop_server`) are fine."""
        self.sesman.process.ensure_running()
        for server in self.servers:
            if server.name not in self.stopped:
                server.process.ensure_running()

    def log_tails(self, lines: int = 15) -> str:
        parts = [
            f"--- {server.name} {server.address} ({server.log_path}):\n{tail(server.log_path, lines)}"
            for server in self.servers
        ]
        return "\n".join(parts)


# --------------------------------------------------------------------------- the client


@dataclass
class ClientResult:
    """A running xfreerdp that reached ``server``; ``close()`` terminates it (by its PID)."""

    client_hostname: str
    user: str
    target: str
    server: str
    elapsed: float
    process: ManagedProcess

    @property
    def alive(self) -> bool:
        return self.process.running

    def close(self) -> int:
        return self.process.stop()

    def output(self, lines: int = 30) -> str:
        return self.process.output_tail(lines)

    def __enter__(self) -> ClientResult:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class ClientSpec:
    host: str
    port: int
    user: str
    password: str | None
    client_hostname: str

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class LaunchedClient:
    spec: ClientSpec
    process: ManagedProcess
    started: float


class ClientRunner:
    """Runs xfreerdp under the Xvfb display and waits until one xrdp log names the client."""

    def __init__(self, display: XvfbDisplay, farm: XrdpFarm, workdir: Path) -> None:
        self.display = display
        self.farm = farm
        self.workdir = workdir
        self.home = workdir / "home"
        self.log_dir = workdir / "clients"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._processes: list[ManagedProcess] = []
        self._counter = 0

    def unique_hostname(self, base: str) -> str:
        """``base-N``, unique for the session and within the 15 characters RDP carries."""
        self._counter += 1
        suffix = f"-{self._counter}"
        return base[: 15 - len(suffix)] + suffix

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DISPLAY=self.display.display, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config")
        )
        env.pop("WAYLAND_DISPLAY", None)
        return env

    def _check_hostname(self, client_hostname: str) -> None:
        if not CLIENT_HOSTNAME_RE.match(client_hostname):
            raise HarnessError(f"client hostname {client_hostname!r}: use 1-15 characters [A-Za-z0-9_-]")
        used = self.farm.locate(client_hostname)
        if used:
            raise HarnessError(
                f"client hostname {client_hostname!r} already connected to {used}: use a unique one"
            )

    @staticmethod
    def _argv(spec: ClientSpec) -> list[str]:
        argv = ["stdbuf", "-oL", "xfreerdp", f"/v:{spec.target}", f"/u:{spec.user}"]
        if spec.password is not None:
            argv.append(f"/p:{spec.password}")
        return [*argv, f"/client-hostname:{spec.client_hostname}", *CLIENT_OPTIONS]

    def launch(self, spec: ClientSpec) -> LaunchedClient:
        """Start xfreerdp and return at once; :meth:`await_connected` waits for the server's log line."""
        self._check_hostname(spec.client_hostname)
        process = ManagedProcess(
            f"xfreerdp[{spec.client_hostname}]",
            self._argv(spec),
            self.log_dir / f"{spec.client_hostname}.log",
            env=self._env(),
            cwd=self.home,
        )
        self._processes.append(process)
        return LaunchedClient(spec, process, time.monotonic())

    def await_connected(self, launched: LaunchedClient, timeout: float = 20.0) -> ClientResult:
        spec, process = launched.spec, launched.process
        try:
            found = wait_for(
                lambda: self.farm.locate(spec.client_hostname) or None,
                timeout=timeout,
                what=f"an xrdp log line 'Connected client computer name: {spec.client_hostname}'",
                check=process.ensure_running,
            )
        except HarnessError:
            raise self._connect_error(launched, timeout) from None
        if len(found) != 1:
            process.stop()
            raise ClientConnectError(
                f"client {spec.client_hostname!r} appears in several server logs: {found}"
            )
        elapsed = time.monotonic() - launched.started
        return ClientResult(spec.client_hostname, spec.user, spec.target, found[0], elapsed, process)

    def _connect_error(self, launched: LaunchedClient, timeout: float) -> ClientConnectError:
        spec, process = launched.spec, launched.process
        code = process.exit_code
        process.stop()
        reason = (
            f"no sign of it within {timeout:.1f}s" if code is None else f"xfreerdp exited with status {code}"
        )
        return ClientConnectError(
            f"xfreerdp /u:{spec.user} to {spec.target} as {spec.client_hostname!r}"
            f" reached no xrdp server ({reason})\n"
            f"client output ({process.log_path}):\n{process.output_tail()}\n"
            f"server logs:\n{self.farm.log_tails()}"
        )

    def run_client(
        self,
        host: str,
        port: int,
        user: str,
        password: str | None,
        client_hostname: str,
        timeout: float = 20.0,
    ) -> ClientResult:
        return self.await_connected(
            self.launch(ClientSpec(host, port, user, password, client_hostname)), timeout
        )

    def run_clients(self, specs: Sequence[ClientSpec], timeout: float = 20.0) -> list[ClientResult]:
        """Start all clients at once (their ~0.4 s start-ups overlap), then wait for each."""
        names = [spec.client_hostname for spec in specs]
        if len(set(names)) != len(names):
            raise HarnessError(f"client hostnames must be unique: {names}")
        launched: list[LaunchedClient] = []
        try:
            for spec in specs:
                launched.append(self.launch(spec))
            return [self.await_connected(item, timeout) for item in launched]
        except BaseException:
            for item in launched:
                item.process.stop()
            raise

    def close_all(self) -> None:
        for process in self._processes:
            process.stop()
        self._processes.clear()


# --------------------------------------------------------------------------- the balancer


def balancer_config_toml(
    listen_port: int,
    servers: Sequence[XrdpServer],
    sticky_path: Path,
    *,
    listen_host: str = LOCALHOST,
    balance: str = "leastconn",
    handshake_timeout: str = "5s",
    connect_timeout: str = "4s",
    sticky_ttl: str = "8h",
    extra: str = "",
) -> str:
    entries = "\n".join(
        f'  {{ name = "{server.name}", address = "{server.address}", weight = 1 }},' for server in servers
    )
    return f"""\
[balancer]
listen = ["{listen_host}:{listen_port}"]
handshake_timeout = "{handshake_timeout}"
connect_timeout = "{connect_timeout}"

[sticky]
path = "{sticky_path}"
ttl = "{sticky_ttl}"

[admin]
listen = "127.0.0.1:0"

[[pool]]
name = "default"
balance = "{balance}"
servers = [
{entries}
]
{extra}"""


@dataclass
class BalancerProcess:
    """``python -m rdpbalancer run -c CONFIG`` as a subprocess; restartable on the same config/port."""

    config_path: Path
    host: str
    port: int
    workdir: Path
    process: ManagedProcess | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.workdir / "balancer.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "rdpbalancer", "run", "-c", str(self.config_path)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        return env

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            raise HarnessError("balancer already running")
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"=== harness: start #{self.starts}: {' '.join(self.argv())}\n")
        self.process = ManagedProcess(
            "rdpbalancer", self.argv(), self.log_path, env=self._env(), cwd=self.workdir
        )
        try:
            wait_listening(self.host, self.port, self.process, timeout, probe=True)
        except HarnessError as exc:
            self.process.stop()
            raise HarnessError(f"balancer did not start: {exc}\nbalancer log:\n{self.log_tail()}") from None
        except BaseException:
            self.process.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout``, reported as an error)."""
        process = self._require_process()
        process.send_signal(sig)
        try:
            code = process.wait(timeout)
        finally:
            process.stop(grace=0)  # kills it if it is still running, reaps it, closes its log
        self.exit_codes.append(code)
        return code

    def restart(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        code = self.stop(sig)
        self.start(timeout)
        return code

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def _require_process(self) -> ManagedProcess:
        if self.process is None:
            raise HarnessError("balancer was never started")
        return self.process


def make_balancer(
    workdir: Path,
    servers: Sequence[XrdpServer],
    *,
    balance: str = "leastconn",
    extra_toml: str = "",
    start: bool = True,
    timeout: float = 20.0,
) -> BalancerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = held_port()  # restarts keep it
    config = workdir / "balancer.toml"
    config.write_text(
        balancer_config_toml(port, servers, workdir / "sticky.db", balance=balance, extra=extra_toml)
    )
    balancer = BalancerProcess(config_path=config, host=LOCALHOST, port=port, workdir=workdir)
    if start:
        balancer.start(timeout)
    return balancer


# --------------------------------------------------------------------------- the whole environment


@dataclass
class E2EEnvironment:
    workdir: Path
    display: XvfbDisplay
    farm: XrdpFarm
    clients: ClientRunner
    setup_seconds: float


def _stopper(process: ManagedProcess) -> Callable[[], None]:
    def stop() -> None:
        process.stop()

    return stop


def _make_workdir(stack: contextlib.ExitStack) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="rdpb-e2e-"))
    if os.environ.get("RDPB_E2E_KEEP"):
        print(f"\nrdpbalancer e2e: keeping {workdir}", file=sys.stderr)
    else:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    return workdir


@contextlib.contextmanager
def e2e_environment(server_names: Sequence[str] = SERVER_NAMES) -> Iterator[E2EEnvironment]:
    """Xvfb + sesman + one xrdp per name; everything is stopped and removed on exit."""
    require_binaries()
    require_no_system_xrdp()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = _make_workdir(stack)
        display = start_xvfb(workdir)
        stack.callback(_stopper(display.process))
        cert, key = make_certificate(workdir)
        sesman = start_sesman(workdir)
        stack.callback(_stopper(sesman.process))
        servers = []
        for name in server_names:
            server = start_xrdp(name, workdir / name, cert, key, sesman)
            stack.callback(server.stop)  # its current process: a test may have restarted it
            servers.append(server)
        farm = XrdpFarm(servers=servers, sesman=sesman, cert=cert, key=key)
        clients = ClientRunner(display, farm, workdir)
        stack.callback(clients.close_all)
        yield E2EEnvironment(workdir, display, farm, clients, time.monotonic() - started)
