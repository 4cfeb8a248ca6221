"""Two xrdp session hosts that really own their sessions, for the session-directory test.

Each host runs its own xrdp-sesman and xrdp, with real logons (Linux users with passwords, PAM,
Xvnc from tigervnc-standalone-server behind xrdp's [Xvnc] module), inside its own mount and
PID namespaces (`unshare --mount --pid --fork`):

- a private /tmp and /run/xrdp: X lock files and sockets and xrdp's per-user sockets of one host
  are invisible to the other (so the hosts' work directories live under /var/tmp);
- its own process table: the host's session script (contrib/xrdp-sessions.sh), run inside the
  namespace, sees that host's sessions only, as it would on a machine of its own;
- distinct X display ranges (X11DisplayOffset) and addresses (sesman and Xvnc listen on the
  host's own 127.x.y.z): the hosts share the loopback network (the balancer must reach them),
  and with it the abstract X sockets (@/tmp/.X11-unix/X<n>), not a port or a display.

A disconnected session keeps running (KillDisconnected=false) and a reconnect with the same
user, size and depth reattaches it: sesman's Default policy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e import harness

USERS = {"alice": "Alice-e2e-pw1", "bob": "Bob-e2e-pw1", "carol": "Carol-e2e-pw1"}
REQUIRED = ("Xvnc", "xrdp", "xrdp-sesman", "xrdp-sesadmin", "unshare", "nsenter", "ss", "curl", "useradd",
            "chpasswd")
SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "xrdp-sessions.sh"

SESMAN_INI = """\
[Globals]
ListenAddress={address}
ListenPort={port}
EnableUserWindowManager=false
UserWindowManager=startwm.sh
DefaultWindowManager={startwm}
ReconnectScript=reconnectwm.sh

[Security]
AllowRootLogin=false
MaxLoginRetry=4
TerminalServerUsers=tsusers
TerminalServerAdmins=tsadmins
AlwaysGroupCheck=false

[Sessions]
X11DisplayOffset={display_offset}
MaxSessions=10
KillDisconnected=false
DisconnectedTimeLimit=0
IdleTimeLimit=0
Policy=Default

[Logging]
LogFile={log}
LogLevel=INFO
EnableSyslog=false

[Xvnc]
param=Xvnc
param=-bs
param=-nolisten
param=tcp
param=-interface
param={address}
param=-dpi
param=96

[Chansrv]
FuseMountName=thinclient_drives

[SessionVariables]
"""

XRDP_INI = """\
[Globals]
ini_version=1
fork=false
port=tcp://127.0.0.1:{port}
use_vsock=false
security_layer=negotiate
crypt_level=high
certificate={cert}
key_file={key}
ssl_protocols=TLSv1.2, TLSv1.3
autorun=Xvnc
allow_channels=true
max_bpp=16

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

[Xvnc]
name=Xvnc
lib=libvnc.so
username=ask
password=ask
ip={sesman_address}
port=-1
"""

# run inside the host's namespaces: private X/xrdp socket directories, then sesman and xrdp
INIT = """\
set -e
mount --make-rprivate /
for d in /tmp /run/xrdp; do mkdir -p "$d"; mount -t tmpfs -o mode=1777 tmpfs "$d"; done
mkdir -p /run/xrdp/sockdir && chmod 3777 /run/xrdp/sockdir
xrdp-sesman --nodaemon --config {workdir}/sesman.ini >{workdir}/sesman.out 2>&1 &
xrdp --nodaemon --config {workdir}/xrdp.ini >{workdir}/xrdp.out 2>&1 &
wait
"""


def ensure_users() -> None:
    """Real Linux users with passwords (idempotent): sesman logs them on through PAM."""
    for user, password in USERS.items():
        if subprocess.run(["id", user], capture_output=True, check=False).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", user], check=True, capture_output=True)
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n".encode(), check=True, capture_output=True)


@dataclass
class SessionHost:
    """One xrdp host in its own namespaces."""

    name: str
    port: int  # xrdp's RDP port on 127.0.0.1
    sesman_address: str
    workdir: Path
    init: harness.ManagedProcess  # `unshare ... sh init`: the namespace's first process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def script(self) -> str:
        """The contrib script as the host has it: a copy on its own disk (a checkout under /tmp,
        as CI's is, is hidden by the host's private /tmp)."""
        return str(self.workdir / SCRIPT.name)

    def ns_pid(self) -> int:
        """The PID (outside) of the namespace's init, to enter it with nsenter."""
        children = Path(f"/proc/{self.init.pid}/task/{self.init.pid}/children").read_text().split()
        if not children:
            raise harness.HarnessError(f"{self.name}: the namespace has no init process")
        return int(children[0])

    def run_inside(self, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.ns_pid()), "-m", "-p", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def sessions(self) -> list[dict[str, object]]:
        """The host's own record: contrib/xrdp-sessions.sh run inside its namespaces."""
        done = self.run_inside("sh", self.script)
        if done.returncode != 0:
            raise harness.HarnessError(f"{self.name}: xrdp-sessions.sh failed: {done.stderr}")
        return list(json.loads(done.stdout)["sessions"])

    def sesadmin_list(self) -> str:
        """sesman's own list (ids and times; xrdp 0.9 gives no user names over its port)."""
        user, password = "alice", USERS["alice"]
        done = subprocess.run(["xrdp-sesadmin", f"-s={self.sesman_address}", "-i=3350", f"-u={user}",
                               f"-p={password}", "-c=list"], capture_output=True, text=True, timeout=20,
                              check=False)
        return done.stdout + done.stderr

    def push(self, url: str, token_file: Path) -> None:
        done = self.run_inside("sh", self.script, "--push", url, "--token-file", str(token_file))
        if done.returncode != 0:
            raise harness.HarnessError(f"{self.name}: push failed: {done.stderr}")

    def end_session(self, session_id: str) -> None:
        """Log the session off: its desktop (the window manager, startwm.sh's `sleep`) ends, and
        sesman ends the session with it, as when a user logs off. By PID, inside the namespace."""
        deadline = time.monotonic() + 10.0  # sesman starts the desktop after Xvnc: a session just
        while True:                          # listed as active may not have it yet
            children = self.run_inside("ps", "-o", "pid=,args=", "--ppid", session_id).stdout.splitlines()
            desktops = [line.split()[0] for line in children if "sleep 86400" in line]
            if desktops:
                break
            if time.monotonic() > deadline:
                raise harness.HarnessError(f"{self.name}: session {session_id} has no desktop process: {children}")
            time.sleep(0.1)
        self.run_inside("kill", "-TERM", *desktops)

    def stop(self) -> None:
        self.init.stop()

    def log_tail(self) -> str:
        files = ("sesman.log", "xrdp.log", "sesman.out", "init.out")
        return "\n".join(f"--- {f}:\n{harness.tail(self.workdir / f)}" for f in files)


def start_host(name: str, workdir: Path, cert: Path, key: Path, display_offset: int) -> SessionHost:
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    port = harness.held_port()
    sesman_port = harness.system_sesman_port()
    address = harness.pick_loopback_address(sesman_port)
    startwm = workdir / "startwm.sh"
    startwm.write_text("#!/bin/sh\n# the session's desktop: it lives until the session is logged off\n"
                       "exec sleep 86400\n")
    startwm.chmod(0o755)
    (workdir / "sesman.ini").write_text(SESMAN_INI.format(
        address=address, port=sesman_port, startwm=startwm, display_offset=display_offset,
        log=workdir / "sesman.log"))
    (workdir / "xrdp.ini").write_text(XRDP_INI.format(port=port, cert=cert, key=key, log=workdir / "xrdp.log",
                                                      sesman_address=address))
    (workdir / "init.sh").write_text(INIT.format(workdir=workdir))
    shutil.copy(SCRIPT, workdir / SCRIPT.name)
    argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "sh",
            str(workdir / "init.sh")]
    init = harness.ManagedProcess(f"host-{name}", argv, workdir / "init.out")
    host = SessionHost(name, port, address, workdir, init)
    try:
        harness.wait_listening(address, sesman_port, init, 15.0)
        harness.wait_listening("127.0.0.1", port, init, 15.0)
    except BaseException:
        init.stop()
        raise harness.HarnessError(f"{name} did not start:\n{host.log_tail()}") from None
    return host


def wait_session(host: SessionHost, user: str, state: str | None, timeout: float = 20.0) -> dict[str, object]:
    """Until `host` reports a session of `user` (in `state`, if given)."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        last = host.sessions()
        for s in last:
            if s["user"] == user and (state is None or s["state"] == state):
                return s
        time.sleep(0.3)
    raise harness.HarnessError(f"{host.name}: no {state or ''} session of {user} within {timeout}s; "
                               f"the host reports {last}\n{host.log_tail()}")


def kill_client(process: harness.ManagedProcess) -> None:
    """The client dies (SIGKILL, no RDP disconnect): the session is left disconnected."""
    process.send_signal(signal.SIGKILL)
    process.stop()


def require() -> None:
    missing = [b for b in REQUIRED if shutil.which(b) is None]
    if missing:
        raise harness.HarnessError(f"missing programs for the session-directory e2e test: {', '.join(missing)} "
                                   "(scripts/install-test-deps.sh installs them)")
