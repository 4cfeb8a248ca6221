"""A real Samba AD domain controller on 127.0.0.1 for the directory tests (one per test session).

Why a real DC: ldap3's MOCK strategies cannot evaluate AD's in-chain matching rule
(1.2.840.113556.1.4.1941), which is the whole point of the LDAP adapter.

How (see :func:`samba_dc`):

1. A *template* domain is provisioned once (``samba-tool domain provision``, ~10 s) and populated
   offline through Samba's own Python API (users, OU=Groups, groups, nesting; ~2 s), then kept under
   ``~/.cache/rdpbalancer-tests/`` (``RDPB_TEST_CACHE_DIR``), keyed by the Samba version and a hash
   of everything that shapes it. The only absolute paths a provisioned domain holds are in its
   ``smb.conf``, so a copy works anywhere once that file is rewritten. ``RDPB_SAMBA_FRESH=1``
   provisions into the session directory instead, without touching the cache.
2. Each session copies the template into a temporary directory, makes a test CA and a server
   certificate for 127.0.0.1 (so LDAPS and StartTLS can be *verified*), completes ``smb.conf``
   (simple binds over plain LDAP, pid/log files inside the directory, the certificate) and starts
   ``samba -F`` in its own process group. Ready = a simple bind succeeds (polled, with a deadline).
3. ``stop()`` signals that process group (SIGTERM, SIGKILL after a grace period) and returns once
   ports 389 and 636 refuse connections; ``start()`` brings the same domain back (outage tests).

Samba's tools are Python programs for Debian's ``/usr/bin/python3`` (the ``samba`` module is not
importable from another interpreter), so they are run with it explicitly. Any failure raises
:class:`SambaError` with the tool's output: the fixture turns that into a test failure, never a skip.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rdpbalancer.directory._ldap3 import ldap3

HOST = "127.0.0.1"
LDAP_PORT, LDAPS_PORT = 389, 636  # Samba has no option to move them
REALM, DOMAIN, DNS_DOMAIN = "CORP.EXAMPLE", "CORP", "corp.example"
BASE_DN = "DC=corp,DC=example"
GROUPS_OU = f"OU=Groups,{BASE_DN}"
ADMIN_USER, ADMIN_PASSWORD = f"Administrator@{DNS_DOMAIN}", "Adm1n-Rdpb-Test!"
SERVICE_USER = "svc-rdpb"
SERVICE_UPN = f"{SERVICE_USER}@{DNS_DOMAIN}"
USER_PASSWORD = "Us3r-Rdpb-Test!"  # every test user's password (complexity rules: 3 classes, 8+ chars)

USERS = ("alice", "bob", "carol", "dave", "José", SERVICE_USER)
GROUPS = ("Accounting", "Marketing", "Sales", "Sales-EMEA", "Staff", "Empty")
MEMBERS = {  # group -> direct members (users, groups, the DC's computer account)
    "Accounting": ("alice",),
    "Marketing": ("bob", "José"),
    "Sales": ("carol", "Sales-EMEA"),  # dave is in Sales only through Sales-EMEA
    "Sales-EMEA": ("dave",),
    "Staff": ("alice", "bob", "carol", "dave", "DC1$"),  # a computer account: not a person
}

SAMBA = Path("/usr/sbin/samba")
SAMBA_TOOL = Path("/usr/bin/samba-tool")
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the interpreter Debian's samba Python modules are built for
INSTALL_HINT = "install them with: bash scripts/install-test-deps.sh"
SYSTEM_ENV_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

PROVISION_TIMEOUT_S = 180.0  # ~10 s on a laptop; generous for a loaded CI machine
START_TIMEOUT_S = 60.0  # first start ~2-4 s
STOP_GRACE_S = 5.0
POLL_INTERVAL_S = 0.05
TEMPLATE_FORMAT = 1  # bump when the template procedure changes in a way the hash cannot see
READY_MARKER = "rdpb-template.json"

PROVISION_ARGS = (
    f"--realm={REALM}",
    f"--domain={DOMAIN}",
    "--server-role=dc",
    "--dns-backend=NONE",
    "--host-name=dc1",
    f"--host-ip={HOST}",
    "--option=interfaces = lo",
    "--option=bind interfaces only = yes",
    "--option=server services = ldap",
)

# Run by /usr/bin/python3 against the offline sam.ldb: one process for the whole population
# (samba-tool would cost ~1.5 s of start-up per user and per group).
POPULATE_SCRIPT = """
import json, sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

spec = json.loads(sys.argv[2])
lp = LoadParm()
lp.load(sys.argv[1])
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
db.create_ou(spec["groups_ou"])
for user in spec["users"]:
    db.newuser(user, spec["password"])
for group in spec["groups"]:
    db.newgroup(group, groupou=spec["groups_ou"].split(",")[0])
for group, members in spec["members"].items():
    db.add_remove_group_members(group, members, add_members_operation=True)
for user in spec["users"] + ["Administrator"]:  # a cached template must not age into expired passwords
    db.setexpiry("(sAMAccountName=%s)" % user, 0, no_expiry_req=True)
"""


class SambaError(RuntimeError):
    """The Samba DC could not be provisioned, started or stopped; the message carries the tool's output."""


# --------------------------------------------------------------------------- helpers


def _system_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = SYSTEM_ENV_PATH
    return env


def _run(argv: list[str], what: str, timeout: float, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            env=_system_env(), cwd=cwd, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise SambaError(f"{what} took more than {timeout:.0f}s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise SambaError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise SambaError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{_tail(output)}")
    return output


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        check()
        if time.monotonic() >= deadline:
            raise SambaError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_programs() -> None:
    missing = [str(p) for p in (SAMBA, SAMBA_TOOL, SYSTEM_PYTHON) if not p.exists()]
    missing += [name for name in ("openssl",) if shutil.which(name) is None]
    if missing:
        raise SambaError(f"the directory tests need these programs, not found: {', '.join(missing)}; {INSTALL_HINT}")


def require_free_ports() -> None:
    busy = [str(port) for port in (LDAP_PORT, LDAPS_PORT) if port_open(port)]
    if busy:
        raise SambaError(
            f"port(s) {', '.join(busy)} on {HOST} are already in use (another Samba, slapd, or a second"
            f" test session?); the test domain controller needs 389 and 636 on {HOST}.{_leftover_hint()}"
        )


def _leftover_hint() -> str:
    """Test DCs survive a test run killed with SIGKILL (they run in their own session): name their PIDs."""
    pid_files = sorted(Path(tempfile.gettempdir()).glob("rdpb-samba-*/dc/run/samba.pid"))
    if not pid_files:
        return ""
    found = ", ".join(f"{path.read_text().strip()} ({path})" for path in pid_files)
    return f" Test DCs left over by earlier runs: pid {found}."


@functools.cache
def samba_version() -> str:
    return _run([str(SAMBA), "--version"], "samba --version", 30).strip().removeprefix("Version ")


# --------------------------------------------------------------------------- the template


def template_key(version: str) -> str:
    spec = [TEMPLATE_FORMAT, version, PROVISION_ARGS, POPULATE_SCRIPT, populate_spec(), ADMIN_PASSWORD]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"samba-template-{re.sub(r'[^A-Za-z0-9.]+', '-', version)}-{digest}"


def populate_spec() -> dict[str, Any]:
    return {
        "groups_ou": GROUPS_OU,
        "users": list(USERS),
        "password": USER_PASSWORD,
        "groups": list(GROUPS),
        "members": {group: list(members) for group, members in MEMBERS.items()},
    }


def provision(target: Path) -> None:
    """A populated domain in `target` (which must not exist), with a marker naming its original path."""
    argv = [
        str(SYSTEM_PYTHON), str(SAMBA_TOOL), "domain", "provision", f"--targetdir={target}",
        f"--adminpass={ADMIN_PASSWORD}", *PROVISION_ARGS,
    ]  # fmt: skip
    _run(argv, "samba-tool domain provision", PROVISION_TIMEOUT_S)
    script = [str(SYSTEM_PYTHON), "-c", POPULATE_SCRIPT, str(target / "etc/smb.conf"), json.dumps(populate_spec())]
    _run(script, "populating the test domain (users, groups)", PROVISION_TIMEOUT_S)
    (target / READY_MARKER).write_text(json.dumps({"path": str(target)}))


def cached_template(cache_root: Path) -> Path:
    """The provisioned template for this Samba version, building it (atomically) when missing."""
    final = cache_root / template_key(samba_version())
    if (final / READY_MARKER).is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="building-", dir=cache_root))
    try:
        provision(building / "dc")
        try:
            os.rename(building / "dc", final)  # atomic: another session may have won the race
        except OSError:
            if not (final / READY_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def copy_domain(template: Path, target: Path) -> None:
    """Copy a provisioned domain; rewrite the absolute paths of its smb.conf (the only ones it holds)."""
    original = json.loads((template / READY_MARKER).read_text())["path"]
    shutil.copytree(template, target, symlinks=True)
    conf = target / "etc/smb.conf"
    conf.write_text(conf.read_text().replace(original, str(target)))


# --------------------------------------------------------------------------- TLS


def make_certificates(directory: Path) -> Path:
    """A test CA and a server certificate for 127.0.0.1 / localhost / dc1.corp.example; returns the CA file."""
    directory.mkdir(mode=0o700)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")  # EC: ~10 ms, RSA: ~0.5 s
    (directory / "server.ext").write_text(
        f"subjectAltName = IP:{HOST}, DNS:localhost, DNS:dc1.{DNS_DOMAIN}\nextendedKeyUsage = serverAuth\n"
    )
    steps = [
        ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "7",
         "-subj", "/CN=rdpbalancer test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-new", *ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", f"/CN=dc1.{DNS_DOMAIN}"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "cert.pem", "-days", "7", "-extfile", "server.ext"],
    ]  # fmt: skip
    for argv in steps:
        _run(argv, "openssl", 60, cwd=directory)
    (directory / "key.pem").chmod(0o600)  # Samba refuses a private key others can read
    return directory / "ca.pem"


def complete_config(conf: Path, dc: Path, tls: Path) -> None:
    """Options appended to [global], after the provisioned ones (the last value of an option wins)."""
    extra = {
        # provisioning leaves the default "yes": simple binds only over TLS. The tests use both.
        "ldap server require strong auth": "no",
        "pid directory": str(dc / "run"),
        "log file": str(dc / "log" / "samba.log"),
        "log level": "1",
        "tls enabled": "yes",
        "tls keyfile": str(tls / "key.pem"),
        "tls certfile": str(tls / "cert.pem"),
        "tls cafile": str(tls / "ca.pem"),
    }
    lines = "".join(f"\t{key} = {value}\n" for key, value in extra.items())
    text = conf.read_text()
    end_of_global = re.search(r"^\[(?!global\])", text, flags=re.MULTILINE)
    at = end_of_global.start() if end_of_global else len(text)
    conf.write_text(text[:at] + lines + "\n" + text[at:])
    for sub in ("run", "log"):
        (dc / sub).mkdir(exist_ok=True)


# --------------------------------------------------------------------------- the running DC


@dataclass
class SambaDC:
    workdir: Path
    dc_dir: Path
    ca_file: Path
    template: str  # "cached", "new template" or "fresh" (RDPB_SAMBA_FRESH)
    setup_seconds: float = 0.0
    url: str = f"ldap://{HOST}"
    ldaps_url: str = f"ldaps://{HOST}"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.dc_dir / "etc/smb.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "samba.out"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @staticmethod
    def group_dn(name: str) -> str:
        return f"CN={name},{GROUPS_OU}"

    @staticmethod
    def user_dn(name: str) -> str:
        return f"CN={name},CN=Users,{BASE_DN}"

    # ---- process

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.running:
            return
        require_free_ports()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = [str(SAMBA), "-F", "-s", str(self.conf), "--debug-stdout"]
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=_system_env(), start_new_session=True,
        )  # fmt: skip
        try:
            _wait_for(self._answers_bind, timeout, f"samba (pid {self._process.pid}) to accept an LDAP bind",
                      self.ensure_running)  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def ensure_running(self) -> None:
        if self._process is None:
            raise SambaError("samba was never started")
        code = self._process.poll()
        if code is not None:
            raise SambaError(f"samba (pid {self._process.pid}) exited with status {code}; its output "
                             f"({self.log_path}):\n{_tail(self.log_path.read_text(errors='replace'))}")  # fmt: skip

    def stop(self) -> None:
        """Stop samba and every process it forked; returns once 389 and 636 refuse connections."""
        process, self._process = self._process, None
        if process is not None:
            _stop_group(process)
            _wait_for(lambda: not (port_open(LDAP_PORT) or port_open(LDAPS_PORT)), STOP_GRACE_S * 2,
                      "ports 389/636 to be released after stopping samba", lambda: None)  # fmt: skip
        if self._log is not None:
            self._log.close()
            self._log = None

    def _answers_bind(self) -> bool:
        try:
            with self.connection(SERVICE_UPN, USER_PASSWORD, timeout=2):
                return True
        except Exception:  # not ready yet, whatever the reason; ensure_running() tells an exit apart
            return False

    # ---- directory changes at runtime

    @contextlib.contextmanager
    def connection(self, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD, timeout: int = 10) -> Iterator[Any]:
        server = ldap3.Server(self.url, connect_timeout=timeout, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=user, password=password, raise_exceptions=True,
                                auto_referrals=False, receive_timeout=timeout)  # fmt: skip
        try:
            conn.bind()
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.unbind()
            if conn.socket is not None:  # ldap3 leaves it open when connect() fails
                conn.socket.close()

    def set_member(self, group: str, user: str, *, present: bool) -> None:
        """Add (present=True) or remove `user` (a user CN) to/from `group` through LDAP, as Administrator."""
        operation = ldap3.MODIFY_ADD if present else ldap3.MODIFY_DELETE
        with self.connection() as conn:
            conn.modify(self.group_dn(group), {"member": [(operation, [self.user_dn(user)])]})

    @contextlib.contextmanager
    def member_added(self, group: str, user: str) -> Iterator[None]:
        """`user` is in `group` inside the block, and removed again after it (the domain stays as seeded)."""
        self.set_member(group, user, present=True)
        try:
            yield
        finally:
            self.ensure_running_or_restart()
            self.set_member(group, user, present=False)

    def ensure_running_or_restart(self) -> None:
        if not self.running:
            self.start()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group start_new_session made for our samba, SIGKILL what is left, then reap.

    The root process is reaped only at the end: until then its PID, which is the group's id, cannot
    be reused, so the signals can only reach processes of this group.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    if not _exited(process.pid, STOP_GRACE_S):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _exited(process.pid, STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # forked workers that outlived the root process
    process.wait(STOP_GRACE_S)


def _exited(pid: int, timeout: float) -> bool:
    """Wait for `pid` to exit without reaping it (WNOWAIT)."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


# --------------------------------------------------------------------------- the whole set-up


def default_cache_root() -> Path:
    configured = os.environ.get("RDPB_TEST_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "rdpbalancer-tests"


def prepare_domain(workdir: Path, cache_root: Path | None) -> tuple[Path, str]:
    target = workdir / "dc"
    if cache_root is None:
        provision(target)
        return target, "fresh"
    already = (cache_root / template_key(samba_version()) / READY_MARKER).is_file()
    copy_domain(cached_template(cache_root), target)
    return target, "cached" if already else "new template"


@contextlib.contextmanager
def samba_dc(cache_root: Path | None = None, keep: bool = False) -> Iterator[SambaDC]:
    """Provision (or copy) the test domain, start samba, yield it; stop it and remove its directory."""
    began = time.monotonic()
    require_programs()
    require_free_ports()
    workdir = Path(tempfile.mkdtemp(prefix="rdpb-samba-"))
    dc: SambaDC | None = None
    try:
        dc_dir, template = prepare_domain(workdir, cache_root)
        ca_file = make_certificates(workdir / "tls")
        complete_config(dc_dir / "etc/smb.conf", dc_dir, workdir / "tls")
        dc = SambaDC(workdir=workdir, dc_dir=dc_dir, ca_file=ca_file, template=template)
        dc.start()
        dc.setup_seconds = time.monotonic() - began
        yield dc
    finally:
        if dc is not None:
            dc.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
