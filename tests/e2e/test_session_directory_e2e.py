"""The session directory end to end: real xfreerdp, two xrdp hosts with real logons, each in
its own namespaces (session_hosts.py), pushing their own session lists to the balancer.

alice logs on through the balancer and lands on one host; her client is killed and her session
stays there, disconnected. The balancer's sticky file is deleted and the balancer restarted:
it knows nothing. She connects again: reason=session, the same host, and the host reattaches
her session (the same session id, no second one). Then her session is logged off; with her
sticky entry still present, once it is older than the logon grace and both hosts answered
since, her next connection is balanced as reason=no-session.

A client killed during its logon and retried at once (issue 24): the hosts answer right after
the kill without listing her yet, and the retry still goes to the host of her first connection
(the entry stands within the logon grace): one session, not a second logon elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import harness, session_hosts
from tests.e2e.session_hosts import USERS, SessionHost
from tests.support.balancer import BalancerProcess, stored

TOKENS = {"XA": "xa-push-token-0123456789ab", "XB": "xb-push-token-0123456789ab"}
# A killed client's session shows disconnected once xrdp drops its connection to the session's
# Xvnc, and on these hosts xrdp first spends about 16 s failing to reach the channel server
# (xrdp_mm_chansrv_connect, four tries), deaf to the closed connection meanwhile.
DISCONNECTED_WITHIN_S = 45.0
CLIENT = ("/cert:ignore", "/log-level:INFO", "-clipboard", "/audio-mode:2", "/size:800x600", "/bpp:16",
          "-themes", "-wallpaper", "/gdi:sw")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SessionHost]]:
    session_hosts.require()
    session_hosts.ensure_users()
    work = Path(tempfile.mkdtemp(prefix="rdpb-xhosts-", dir="/var/tmp"))  # each host mounts its own /tmp
    os.chmod(work, 0o755)  # the users' sessions run the host's startwm.sh from it
    cert, key = harness.make_certificate(work)
    started: dict[str, SessionHost] = {}
    try:
        for name, offset in (("XA", 20), ("XB", 40)):
            started[name] = session_hosts.start_host(name, work / name, cert, key, offset)
        yield started
    finally:
        for host in started.values():
            host.stop()
        if not os.environ.get("RDPB_E2E_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    xvfb = harness.start_xvfb(tmp_path_factory.mktemp("xvfb"))
    try:
        yield xvfb.display
    finally:
        xvfb.process.stop()


def balancer_config(tmp: Path, hosts: dict[str, SessionHost], port: int, admin_port: int,
                    server_extra: str = "", sessions_extra: str = "") -> Path:
    tokens = tmp / "push-tokens.toml"
    tokens.write_text("".join(f'{k} = "{v}"\n' for k, v in TOKENS.items()))
    os.chmod(tokens, 0o600)
    rows = ", ".join(f'{{ name = "{n}", address = "{h.address}"{server_extra} }}' for n, h in hosts.items())
    path = tmp / "rdpb.toml"
    path.write_text(f"""
[balancer]
listen = ["127.0.0.1:{port}"]
connect_timeout = "5s"
[sticky]
path = "{tmp / 'sticky.db'}"
[health]
check = "tcp"
interval = "1s"
[admin]
listen = "127.0.0.1:{admin_port}"
[sessions]
source = "push"
push_tokens = "{tokens}"
stale_after = "30s"
{sessions_extra}
[[pool]]
name = "xrdp"
balance = "leastsessions"
servers = [{rows}]
""")
    return path


def push_all(hosts: dict[str, SessionHost], admin_port: int, tmp: Path) -> None:
    """What each host's timer does every 15 s, done now."""
    for name, host in hosts.items():
        token = host.workdir / "push.token"  # the host's own disk (its /tmp is its own)
        token.write_text(TOKENS[name])
        os.chmod(token, 0o600)
        host.push(f"http://127.0.0.1:{admin_port}/api/v1/hosts/{name}/sessions", token)


def logon(display: str, port: int, user: str, tmp: Path, tag: str) -> harness.ManagedProcess:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DISPLAY": display, "HOME": str(home)}
    argv = ["xfreerdp", f"/v:127.0.0.1:{port}", f"/u:{user}", f"/p:{USERS[user]}", f"/client-hostname:{tag}",
            *CLIENT]
    return harness.ManagedProcess(f"xfreerdp-{tag}", argv, tmp / f"{tag}.log", env=env, cwd=home)


def routed_line(log: Path, user: str, after: int, interval: float = 0.2) -> str:
    """The balancer's `routed` line for `user`, among the lines after the first `after`."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = log.read_text(errors="replace").splitlines()[after:]
        for line in lines:
            if " routed " in line and f'user="{user}"' in line:
                return line
        time.sleep(interval)
    raise AssertionError(f"no routed line for {user} in {log}:\n{harness.tail(log, 40)}")


def line_count(log: Path) -> int:
    return len(log.read_text(errors="replace").splitlines()) if log.exists() else 0


def server_of(line: str) -> str:
    found = re.search(r"server=(\w+)", line)
    assert found is not None, line
    return found.group(1)


def explain(admin_port: int, user: str) -> dict[str, object]:
    """The balancer's answer to "where would `user` go now, and why" (GET /api/v1/explain)."""
    query = urllib.parse.urlencode({"user": user})
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/api/v1/explain?{query}", timeout=5.0) as answer:
        return dict(json.loads(answer.read()))


def why(explained: dict[str, object]) -> str:
    """The decision and the directory's steps of an explain answer, on one line."""
    decision = explained["decision"]
    assert isinstance(decision, dict)
    steps = explained["steps"]
    assert isinstance(steps, list)
    notes = [f"{s['route']}: {s['why']}" for s in steps if s["route"] in ("sessions", "entry stands")]
    return f"reason={decision['reason']} servers={decision['servers']} | " + " | ".join(notes)


def sessions_of(hosts: dict[str, SessionHost], user: str) -> dict[str, list[dict[str, object]]]:
    """`user`'s sessions on each host, as the hosts themselves list them."""
    return {name: [s for s in host.sessions() if s["user"] == user] for name, host in hosts.items()}


def test_a_returning_user_reaches_her_real_session_and_a_logged_off_one_is_balanced_anew(
        hosts: dict[str, SessionHost], display: str, tmp_path: Path, fixed_port: Callable[[], int]) -> None:
    log_off_everyone(hosts)
    port, admin_port = fixed_port(), fixed_port()  # the same after a restart; the hosts push to it
    # a short logon grace: step 4 waits for it to pass before her entry can be history
    config = balancer_config(tmp_path, hosts, port, admin_port, sessions_extra='logon_grace = "3s"')
    log = tmp_path / "balancer.log"
    bal = BalancerProcess(config, port, log)
    bal.start()
    clients: list[harness.ManagedProcess] = []
    try:
        push_all(hosts, admin_port, tmp_path)
        # 1. alice logs on, lands on one host, and her client dies: the session stays, disconnected
        client = logon(display, port, "alice", tmp_path, "alice-1")
        clients.append(client)
        first = routed_line(log, "alice", 0)
        home = server_of(first)
        other = next(n for n in hosts if n != home)
        session = session_hosts.wait_session(hosts[home], "alice", "active", timeout=30)
        session_hosts.kill_client(client)
        session_hosts.wait_session(hosts[home], "alice", "disconnected", DISCONNECTED_WITHIN_S)
        assert not [s for s in hosts[other].sessions() if s["user"] == "alice"]
        before = hosts[home].sesadmin_list()

        # 2. the balancer forgets everything: its sticky file is deleted, the process restarted
        bal.stop()
        (tmp_path / "sticky.db").unlink()
        for extra in ("sticky.db-wal", "sticky.db-shm"):
            (tmp_path / extra).unlink(missing_ok=True)
        bal.start()
        push_all(hosts, admin_port, tmp_path)

        # 3. alice again: the directory sends her to her session, and the host reattaches it
        mark = line_count(log)
        client = logon(display, port, "alice", tmp_path, "alice-2")
        clients.append(client)
        again = routed_line(log, "alice", mark)
        assert "reason=session" in again and f"server={home}" in again, again
        reattached = session_hosts.wait_session(hosts[home], "alice", "active", timeout=30)
        assert reattached["id"] == session["id"]  # her session, not a new one
        assert [s["user"] for s in hosts[home].sessions()].count("alice") == 1
        assert hosts[home].sesadmin_list().count("Session ID") == before.count("Session ID")
        session_hosts.kill_client(client)

        # 4. her session is logged off on the host; her sticky entry still names it
        hosts[home].end_session(str(session["id"]))
        deadline = time.monotonic() + 20
        while any(s["user"] == "alice" for s in hosts[home].sessions()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(s["user"] == "alice" for s in hosts[home].sessions())
        assert stored(tmp_path / "sticky.db").get("alice") == home
        # The entry is history only on evidence that covers it: no open connection of hers, last
        # used (her connection's end) longer ago than the logon grace, and both hosts answered
        # since. The hosts push, as their timers would, until the balancer says so (its explain),
        # within a bound. (Her killed client's connection ends only when xrdp closes its side.)
        stood: dict[str, str] = {}  # why the entry stood -> when first seen
        deadline = time.monotonic() + 60
        while True:
            push_all(hosts, admin_port, tmp_path)
            covered = why(explain(admin_port, "alice"))
            if "reason=no-session" in covered:
                break
            reason = re.sub(r"\d+s ago", "Ns ago", covered.partition(" stands: ")[2].partition(" (")[0])
            stood.setdefault(reason, time.strftime("%H:%M:%S"))
            assert time.monotonic() < deadline, f"her entry still stands after 60 s: {covered}"
            time.sleep(0.5)
        mark = line_count(log)
        client = logon(display, port, "alice", tmp_path, "alice-3")
        clients.append(client)
        anew = routed_line(log, "alice", mark)
        assert "reason=no-session" in anew, anew
        session_hosts.wait_session(hosts[server_of(anew)], "alice", "active", 30)
        stands = " / ".join(f"{t} {r}" for r, t in stood.items()) or "(covered at once)"
        print("\n".join(["first:   " + first, "session: " + str(session), "again:   " + again,
                         "sesadmin before/after:\n" + before + hosts[home].sesadmin_list(),
                         "stood:   " + stands, "covered: " + covered, "anew:    " + anew]))
    finally:
        for client in clients:
            session_hosts.kill_client(client)
        bal.stop()


def log_off_everyone(hosts: dict[str, SessionHost]) -> None:
    """Start from empty hosts: every session (an earlier test's, disconnected) logged off."""
    for host in hosts.values():
        for session in host.sessions():
            host.end_session(str(session["id"]))
    deadline = time.monotonic() + 20
    while any(host.sessions() for host in hosts.values()) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not any(host.sessions() for host in hosts.values()), {n: h.sessions() for n, h in hosts.items()}


def refused_line(log: Path, user: str, after: int) -> str:
    """The balancer's line turning `user` away, among the lines after the first `after`."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines()[after:]:
            if f'user="{user}"' in line and " reason=" in line and " routed " not in line and " end " not in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"no refusal of {user} in {log}:\n{harness.tail(log, 40)}")


def test_a_cap_reached_refuses_a_new_user_as_full_and_never_strands_a_session(
        hosts: dict[str, SessionHost], display: str, tmp_path: Path, fixed_port: Callable[[], int]) -> None:
    """max_sessions = 1 on both hosts, their real sessions as the load: alice and bob fill them,
    carol is refused as `full`; alice's disconnected session is reattached although her host is at
    its cap; once bob logs off, carol gets through."""
    log_off_everyone(hosts)
    port, admin_port = fixed_port(), fixed_port()  # the same after a restart; the hosts push to it
    config = balancer_config(tmp_path, hosts, port, admin_port, server_extra=", max_sessions = 1")
    log = tmp_path / "balancer.log"
    bal = BalancerProcess(config, port, log)
    bal.start()
    clients: list[harness.ManagedProcess] = []
    try:
        push_all(hosts, admin_port, tmp_path)
        placed: dict[str, str] = {}
        sessions: dict[str, dict[str, object]] = {}
        for user in ("alice", "bob"):  # 1. one user on each host: both at their cap
            mark = line_count(log)
            clients.append(logon(display, port, user, tmp_path, f"{user}-cap"))
            line = routed_line(log, user, mark)
            placed[user] = re.search(r"server=(\w+)", line).group(1)  # type: ignore[union-attr]
            sessions[user] = session_hosts.wait_session(hosts[placed[user]], user, "active", timeout=30)
            push_all(hosts, admin_port, tmp_path)
        assert sorted(placed.values()) == sorted(hosts), placed

        # 2. carol: every host is full; refused with the usage, not a silent close
        mark = line_count(log)
        carol = logon(display, port, "carol", tmp_path, "carol-refused")
        refused = refused_line(log, "carol", mark)
        assert "reason=full: every server of pool xrdp that takes new users is at its max_sessions" in refused
        assert all(f"{name} 1/1" in refused for name in hosts) and "sessions)" in refused, refused
        carol.stop()
        assert not any(s["user"] == "carol" for h in hosts.values() for s in h.sessions())

        # 3. alice's client dies; she comes back to her host although it is at its cap
        session_hosts.kill_client(clients.pop(0))
        session_hosts.wait_session(hosts[placed["alice"]], "alice", "disconnected", DISCONNECTED_WITHIN_S)
        push_all(hosts, admin_port, tmp_path)
        mark = line_count(log)
        clients.append(logon(display, port, "alice", tmp_path, "alice-cap-2"))
        again = routed_line(log, "alice", mark)
        assert f"server={placed['alice']}" in again and "reason=session" in again, again
        back = session_hosts.wait_session(hosts[placed["alice"]], "alice", "active", timeout=30)
        assert back["id"] == sessions["alice"]["id"]  # reattached: her session, not a new one

        # 4. bob logs off: his host is below its cap again, and carol gets in there
        hosts[placed["bob"]].end_session(str(sessions["bob"]["id"]))
        deadline = time.monotonic() + 20
        while any(s["user"] == "bob" for s in hosts[placed["bob"]].sessions()) and time.monotonic() < deadline:
            time.sleep(0.3)
        push_all(hosts, admin_port, tmp_path)
        mark = line_count(log)
        clients.append(logon(display, port, "carol", tmp_path, "carol-2"))
        admitted = routed_line(log, "carol", mark)
        assert f"server={placed['bob']}" in admitted, admitted
        session_hosts.wait_session(hosts[placed["bob"]], "carol", "active", timeout=30)
        print("\n".join(["refused: " + refused, "alice:   " + again, "carol:   " + admitted]))
    finally:
        for client in clients:
            session_hosts.kill_client(client)
        bal.stop()


def test_a_client_killed_during_its_logon_and_retried_at_once_lands_on_the_same_host_with_one_session(
        hosts: dict[str, SessionHost], display: str, tmp_path: Path, fixed_port: Callable[[], int]) -> None:
    """Issue 24, with the default logon grace (120 s). alice has no session and no sticky entry,
    but a host listed her name since the balancer started (a session of hers, since logged off),
    so her missing session compares: what holds her entry below is the grace, not the name check.
    Her connection is killed as soon as the balancer routed it, during the logon; both hosts push
    right after (answering after the placement without listing her, the dangerous case, or with
    her new session on the home host); the retry, started at once, goes to the same host and
    ends with one session of hers, none on the other host."""
    log_off_everyone(hosts)
    port, admin_port = fixed_port(), fixed_port()  # the same after a restart; the hosts push to it
    config = balancer_config(tmp_path, hosts, port, admin_port)  # logon_grace: the default
    log = tmp_path / "balancer.log"
    bal = BalancerProcess(config, port, log)
    bal.start()
    clients: list[harness.ManagedProcess] = []
    try:
        # 0. earlier, straight to a host: a session of hers, listed, then logged off
        earlier = hosts[sorted(hosts)[-1]]
        clients.append(logon(display, earlier.port, "alice", tmp_path, "alice-earlier"))
        old = session_hosts.wait_session(earlier, "alice", "active", timeout=30)
        push_all(hosts, admin_port, tmp_path)
        session_hosts.kill_client(clients[-1])
        earlier.end_session(str(old["id"]))
        deadline = time.monotonic() + 20
        while any(sessions_of(hosts, "alice").values()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(sessions_of(hosts, "alice").values())
        push_all(hosts, admin_port, tmp_path)
        fresh = why(explain(admin_port, "alice"))
        assert "reason=new" in fresh and "no host listed this name" not in fresh, fresh

        # 1. her logon through the balancer, killed as soon as it is routed
        mark = line_count(log)
        client = logon(display, port, "alice", tmp_path, "alice-killed")
        clients.append(client)
        first = routed_line(log, "alice", mark, interval=0.01)
        session_hosts.kill_client(client)
        home = server_of(first)
        other = next(n for n in hosts if n != home)

        # 2. both hosts answer right after, then she retries at once
        push_all(hosts, admin_port, tmp_path)
        stood = why(explain(admin_port, "alice"))
        mark = line_count(log)
        clients.append(logon(display, port, "alice", tmp_path, "alice-retry"))
        second = routed_line(log, "alice", mark)
        print("\n".join(["first:  " + first, "pushed: " + stood, "second: " + second]))
        assert server_of(second) == home, (first, stood, second)
        assert "reason=sticky-hit" in second or "reason=session" in second, second

        # 3. her session on that host, and only that one
        session_hosts.wait_session(hosts[home], "alice", "active", timeout=30)
        seen = []
        for _ in range(3):  # a session of the killed logon would show by now; look a few times
            seen.append(sessions_of(hosts, "alice"))
            time.sleep(0.7)
        for mine in seen:
            assert len(mine[home]) == 1 and not mine[other], seen
        print("hosts:  " + str(seen[-1]))
    finally:
        for client in clients:
            session_hosts.kill_client(client)
        bal.stop()
