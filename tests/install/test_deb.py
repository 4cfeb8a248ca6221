"""The Debian package as an admin installs it, with systemd as PID 1.

scripts/build-deb.sh builds the package from this checkout, and a second time from a copy with the
version bumped; a debootstrapped Debian 12 boots under `systemd-nspawn -b --private-network` (its
own network namespace: nothing in it reaches beyond it). Inside: `apt install ./the.deb` starts the
packaged loopback-only configuration, a real connection is routed to fake RDP servers running in
the container's namespace, `systemctl reload` applies a good file and refuses a bad one, the newer
package is installed while a session relays (the handoff: the session lives on, the new version
serves), a reinstall whose new process cannot start leaves the old one serving, then stop, remove
(the sticky table stays) and purge (state and user go). One container, one test, per suite run.
Cgroup resource limits are not enforced in this container: none is tested.

`python -m tests.install.test_deb agent` is the helper run inside the container's network
namespace (`nsenter -n`): the fake farm and the clients, driven by JSON lines on stdin.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.packaging import (
    ROOT,
    SYSTEMD_INCLUDE,
    clean_copy,
    debian_base_tar,
    project_version,
    run,
)

pytestmark = [pytest.mark.slow, pytest.mark.real_services, pytest.mark.processes, pytest.mark.timeout(1500)]

BASE_CACHE = Path.home() / ".cache" / "rdpbalancer-tests"  # the debootstrapped tree, between runs
BUILD_TIMEOUT_S = 900.0  # pip may download every dependency on a cold cache
BOOT_TIMEOUT_S = 60.0  # about a second here
APT_TIMEOUT_S = 300.0
SERVICE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
BUMPED = f"{project_version()}.post1"  # the upgrade's version: newer for dpkg and for the balancer
FARM = {"TS01": 13389, "TS02": 13390, "TS03": 13391}  # fake RDP servers on the container's loopback
LISTEN_PORT = 3389
ADMIN = "http://127.0.0.1:9000"
APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
       "-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"]
# compression is not under test and xz costs ~10 s per build
BUILD_ENV = {**os.environ, "DPKG_DEB_COMPRESSOR_TYPE": "gzip", "DPKG_DEB_COMPRESSOR_LEVEL": "1"}


def build_deb(source: Path, out: Path) -> Path:
    done = run(["bash", str(source / "scripts" / "build-deb.sh"), "--out", str(out)], BUILD_TIMEOUT_S,
               env=BUILD_ENV)
    return Path(done.stdout.strip().splitlines()[-1])


def bumped_source(dest: Path) -> Path:
    """This checkout with the version raised, as the next release would be."""
    source = clean_copy(dest)
    pyproject = source / "pyproject.toml"
    text, count = re.subn(r'(?m)^version = ".*"$', f'version = "{BUMPED}"', pyproject.read_text())
    assert count == 1
    pyproject.write_text(text)
    return source


@pytest.fixture(scope="module")
def debs_and_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(this version's .deb, the bumped one's, the base tree's tar), made side by side."""
    out = tmp_path_factory.mktemp("debs")
    bumped = bumped_source(tmp_path_factory.mktemp("bumped-source"))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(build_deb, ROOT, out)
        second = pool.submit(build_deb, bumped, out)
        base = pool.submit(debian_base_tar, BASE_CACHE, SYSTEMD_INCLUDE)
        return first.result(), second.result(), base.result()


class Container:
    """A booted Debian 12 tree: systemd-nspawn's PID (ours), its PID 1, and commands run inside
    with `nsenter -a` (every namespace of the container)."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.log_path = tree.parent / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-b", "-D", str(self.tree), "--register=no", "--keep-unit",
                 "--console=pipe", "--private-network"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if not self.pid1:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                self.pid1 = int(children[0]) if children else 0
            if self.pid1 and self.sh("test", "-S", "/run/systemd/private", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the container did not boot:\n{self.log_path.read_text()[-4000:]}")

    def sh(self, *argv: str, check: bool = True, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        full = ["nsenter", "-t", str(self.pid1), "-a", *argv]
        if check:
            return run(full, timeout_s)
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout_s, check=False)

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.sh("systemctl", "--no-pager", *args, check=check, timeout_s=SERVICE_TIMEOUT_S * 2)

    def main_pid(self) -> int:
        return int(self.systemctl("show", "--property=MainPID", "--value", "rdpbalancer.service").stdout)

    def journal(self) -> str:
        return self.sh("journalctl", "--no-pager", "--output=cat", "--unit=rdpbalancer.service").stdout

    def alive(self, pid: int) -> bool:
        return self.sh("test", "-d", f"/proc/{pid}", check=False).returncode == 0

    def poweroff(self) -> None:
        """SIGTERM to our systemd-nspawn: it asks the container's systemd to power off (SIGRTMIN+3)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Agent:
    """`python -m tests.install.test_deb agent` in the container's network namespace only (the
    host's files and Python, the container's loopback): one JSON request and answer per line."""

    def __init__(self, pid1: int) -> None:
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(pid1), "-n", sys.executable, "-m", "tests.install.test_deb", "agent"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, op: str, **args: object) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the agent exited with {self.proc.wait()}")
        answer = dict(json.loads(line))
        if "error" in answer:
            raise RuntimeError(f"agent {op} {args}: {answer['error']}")
        return answer

    def get(self, path: str) -> tuple[int, str]:
        answer = self.ask("get", url=f"{ADMIN}{path}")
        return int(str(answer["status"])), str(answer["body"])

    def stop(self) -> None:
        """EOF on its stdin ends it; SIGKILL (our child, by PID) if it does not end."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def container(debs_and_base: tuple[Path, Path, Path], tmp_path: Path) -> Iterator[Container]:
    tree = tmp_path / "tree"
    tree.mkdir()
    run(["tar", "-C", str(tree), "-xf", str(debs_and_base[2])], 300)
    box = Container(tree)
    try:
        box.boot()
        yield box
    finally:
        box.poweroff()
        shutil.rmtree(tree, ignore_errors=True)


def farm_config(servers: tuple[str, ...]) -> str:
    rows = ",\n".join(f'  {{ name = "{n}", address = "127.0.0.1:{FARM[n]}" }}' for n in servers)
    return f"""# written by tests/install/test_deb.py
[balancer]
listen = ["127.0.0.1:{LISTEN_PORT}"]
[sticky]
path = "/var/lib/rdpbalancer/sticky.db"
[health]
interval = "1s"
[admin]
listen = "127.0.0.1:9000"
token_file = "/etc/rdpbalancer/admin.token"
unix_socket = "/run/rdpbalancer/admin.sock"
[[pool]]
name = "default"
servers = [
{rows}
]
"""


class Steps:
    """Each step's duration, printed as the test's log."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.start:6.1f}s] {what} ({now - self.last:.1f}s)", flush=True)
        self.last = now


def test_install_route_reload_upgrade_with_a_live_session_stop_remove_purge(
        debs_and_base: tuple[Path, Path, Path], container: Container) -> None:
    steps = Steps()
    first, second, _ = debs_and_base
    steps.done(f"built {first.name} and {second.name}; Debian 12 booted with systemd as PID 1")
    for deb in (first, second):
        shutil.copy2(deb, container.tree / "root" / deb.name)
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        # beside the container's steps: every tag lintian still raises is overridden with a reason
        lintian = background.submit(subprocess.run, ["lintian", "--fail-on", "error,warning", str(first)],
                                    capture_output=True, text=True, timeout=300, check=False)
        agent = Agent(container.pid1)
        try:
            install_starts_the_loopback_only_config(container, agent, first, steps)
            route_and_reload(container, agent, steps)
            upgrade_keeps_the_session(container, agent, second, steps)
            a_failed_handoff_leaves_the_old_version_serving(container, agent, second, steps)
            stop_remove_purge(container, steps)
        finally:
            agent.stop()
        linted = lintian.result()
    print(f"lintian {first.name}: exit {linted.returncode} {linted.stdout}{linted.stderr}")
    assert linted.returncode == 0, linted.stdout


def install_starts_the_loopback_only_config(box: Container, agent: Agent, deb: Path, steps: Steps) -> None:
    out = box.sh(*APT, "install", f"/root/{deb.name}", timeout_s=APT_TIMEOUT_S).stdout
    assert "Setting up rdpbalancer" in out, out
    assert box.systemctl("is-active", "rdpbalancer.service").stdout.strip() == "active"
    passwd = (box.tree / "etc" / "passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("rdpbalancer:"))
    assert 100 <= int(user[2]) < 1000 and user[6] == "/usr/sbin/nologin", user  # a system user
    token = (box.tree / "etc" / "rdpbalancer" / "admin.token").stat()
    assert token.st_mode & 0o777 == 0o600 and token.st_uid == int(user[2])
    conffiles = (box.tree / "var" / "lib" / "dpkg" / "info" / "rdpbalancer.conffiles").read_text()
    assert conffiles.split() == ["/etc/rdpbalancer/config.toml"]
    # transparent mode's routing script where README "Transparent mode" says, not compressed: `sh` runs it
    routing = box.sh("sh", "/usr/share/doc/rdpbalancer/contrib/transparent/rdpbalancer-transparent", "status",
                     check=False)
    assert routing.returncode == 2 and "ip is not installed (iproute2)" in routing.stderr, routing  # none in the box
    journal = box.journal()
    notice = next(line for line in journal.splitlines() if "only loopback" in line)
    print(notice)
    with pytest.raises(RuntimeError, match="IncompleteReadError"):  # closed without a Connection Confirm
        agent.ask("where", user="alice", port=LISTEN_PORT)
    assert "reason=no-server" in box.journal()  # the placeholder takes nobody
    security = box.sh("systemd-analyze", "security", "--no-pager", "rdpbalancer.service").stdout
    score = re.search(r"Overall exposure level for rdpbalancer.service: (\S+) (\S+)", security)
    assert score is not None, security
    print(f"systemd-analyze security rdpbalancer.service: {score.group(1)} {score.group(2)}")
    assert float(score.group(1)) <= 2.0, security
    steps.done(f"apt install ./{deb.name}: service active on the packaged config (loopback only)")


def write_config(box: Container, text: str) -> None:
    (box.tree / "etc" / "rdpbalancer" / "config.toml").write_text(text)


def server_names(agent: Agent) -> set[str]:
    status, body = agent.get("/api/v1/servers")
    assert status == 200, body
    return {server["name"] for server in json.loads(body)["servers"]}


def route_and_reload(box: Container, agent: Agent, steps: Steps) -> None:
    agent.ask("farm", servers=FARM)
    write_config(box, farm_config(("TS01", "TS02")))
    box.systemctl("restart", "rdpbalancer.service")
    alice = str(agent.ask("where", user="alice", port=LISTEN_PORT)["server"])
    assert alice in ("TS01", "TS02")
    routed = [line for line in box.journal().splitlines() if " routed " in line and '"alice"' in line]
    print(routed[-1])
    steps.done(f"farm config, systemctl restart: alice routed to {alice}")

    pid = box.main_pid()
    write_config(box, farm_config(("TS01", "TS02", "TS03")))
    box.systemctl("reload", "rdpbalancer.service")
    assert "TS03" in server_names(agent)
    write_config(box, farm_config(("TS01", "TS02", "TS03")).replace("[[pool]]", "[[pool]]\nwieght = 1"))
    refused = box.systemctl("reload", "rdpbalancer.service", check=False)
    assert refused.returncode != 0  # ExecReload's check-config failed: no signal was sent
    assert "wieght: unknown key" in box.journal()
    assert box.main_pid() == pid and box.systemctl("is-active", "rdpbalancer.service").stdout.strip() == "active"
    write_config(box, farm_config(("TS01", "TS02", "TS03")))
    assert agent.ask("where", user="alice", port=LISTEN_PORT)["server"] == alice
    steps.done("systemctl reload: TS03 added; a bad file refused by ExecReload, the service unchanged")


def build_version(agent: Agent) -> str:
    status, body = agent.get("/metrics")
    assert status == 200
    found = re.search(r'rdpbalancer_build_info\{version="([^"]+)"\}', body)
    assert found is not None
    return found.group(1)


def upgrade_keeps_the_session(box: Container, agent: Agent, deb: Path, steps: Steps) -> None:
    bob = str(agent.ask("open", user="bob", port=LISTEN_PORT)["server"])
    old_pid = box.main_pid()
    assert build_version(agent) == project_version()
    out = box.sh(*APT, "install", f"/root/{deb.name}", timeout_s=APT_TIMEOUT_S).stdout
    print("\n".join(line for line in out.splitlines() if line.startswith(("Unpacking", "Setting up", "rdpbalancer"))))
    assert "serves now" in out, out
    new_pid = box.main_pid()
    assert new_pid != old_pid and box.alive(old_pid)
    assert agent.ask("who", user="bob")["server"] == bob  # the same connection, relayed by the old process
    assert build_version(agent) == BUMPED  # the admin API and the listeners are the new code's
    carol = agent.ask("where", user="carol", port=LISTEN_PORT)["server"]
    assert agent.ask("where", user="alice", port=LISTEN_PORT)["server"] in FARM  # the table came along
    steps.done(f"apt install ./{deb.name} with bob's session relaying: pid {old_pid} -> {new_pid}, "
               f"bob still on {bob} through the old process, carol routed to {carol} by {BUMPED}")

    agent.ask("close", user="bob")
    deadline = time.monotonic() + SERVICE_TIMEOUT_S
    while box.alive(old_pid):
        assert time.monotonic() < deadline, f"pid {old_pid} did not exit after its last session"
        time.sleep(0.1)
    assert box.main_pid() == new_pid
    # the old process left quietly: systemd still sees the service running, as the new process
    assert box.systemctl("is-active", "rdpbalancer.service", check=False).stdout.strip() == "active"
    assert agent.ask("where", user="alice", port=LISTEN_PORT)["server"] in FARM
    steps.done(f"bob logged off: the old process {old_pid} exited, {new_pid} serves alone")


def a_failed_handoff_leaves_the_old_version_serving(box: Container, agent: Agent, deb: Path, steps: Steps) -> None:
    """A reinstall is a handoff too; with a file the new process refuses, it fails and the running one stays."""
    pid = box.main_pid()
    write_config(box, farm_config(("TS01", "TS02", "TS03")).replace("[[pool]]", "[[pool]]\nwieght = 1"))
    done = box.sh(*APT, "install", "--reinstall", f"/root/{deb.name}", check=False, timeout_s=APT_TIMEOUT_S)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "did not take over" in said and "keeps serving all users" in said, said
    print(next(line for line in said.splitlines() if "did not take over" in line))
    assert box.main_pid() == pid
    assert agent.ask("where", user="alice", port=LISTEN_PORT)["server"] in FARM
    write_config(box, farm_config(("TS01", "TS02", "TS03")))
    steps.done("apt install --reinstall with a file the new process refuses: handoff failed, "
               f"pid {pid} still serves")


def stop_remove_purge(box: Container, steps: Steps) -> None:
    box.systemctl("stop", "rdpbalancer.service")
    assert box.systemctl("is-active", "rdpbalancer.service", check=False).stdout.strip() == "inactive"
    assert "SIGTERM received, shutting down" in box.journal()
    box.sh(*APT, "remove", "rdpbalancer", timeout_s=APT_TIMEOUT_S)
    tree = box.tree
    assert (tree / "var" / "lib" / "rdpbalancer" / "sticky.db").exists()  # the table stays for a reinstall
    assert (tree / "etc" / "rdpbalancer" / "config.toml").exists()  # a conffile stays until purge
    assert not (tree / "opt" / "rdpbalancer").exists()
    assert "rdpbalancer:" in (tree / "etc" / "passwd").read_text()
    steps.done("systemctl stop, apt remove: the sticky table, the config and the user stay")
    box.sh(*APT, "purge", "rdpbalancer", timeout_s=APT_TIMEOUT_S)
    assert not (tree / "var" / "lib" / "rdpbalancer").exists()
    assert not (tree / "etc" / "rdpbalancer").exists()
    assert "rdpbalancer:" not in (tree / "etc" / "passwd").read_text()
    assert "rdpbalancer:" not in (tree / "etc" / "group").read_text()
    steps.done("apt purge: state, config, token and user gone")


# --- the agent, run inside the container's network namespace -------------------------------


async def _agent() -> None:
    from tests.support.fakes import WHO, FakeRdpServer, RdpClient, rdp_connect, where  # noqa: PLC0415 - only here

    servers: list[FakeRdpServer] = []
    sessions: dict[str, RdpClient] = {}

    async def handle(request: dict[str, object]) -> dict[str, object]:
        match request["op"]:
            case "farm":
                for name, port in dict(request["servers"]).items():  # type: ignore[call-overload]
                    servers.append(await FakeRdpServer(name, port=port).start())
                return {}
            case "where":
                return {"server": await where(int(str(request["port"])), str(request["user"]))}
            case "open":
                client = await rdp_connect(int(str(request["port"])), str(request["user"]))
                sessions[str(request["user"])] = client
                return {"server": client.server}
            case "who":  # one more round trip on the open connection
                client = sessions[str(request["user"])]
                client.writer.write(WHO)
                line = await asyncio.wait_for(client.reader.readline(), 10)
                return {"server": line.decode().strip()}
            case "close":
                await sessions.pop(str(request["user"])).close()
                return {}
            case "get":
                return await asyncio.to_thread(_http_get, str(request["url"]))
        return {"error": f"unknown op {request['op']!r}"}

    while line := await asyncio.to_thread(sys.stdin.readline):
        try:
            answer = await handle(json.loads(line))
        except Exception as exc:  # the test process shows it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    for client in sessions.values():
        await client.close()
    for server in servers:
        await server.stop()


def _http_get(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # the container's loopback
            return {"status": resp.status, "body": resp.read().decode()}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode()}


if __name__ == "__main__" and sys.argv[1:] == ["agent"]:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_agent())
