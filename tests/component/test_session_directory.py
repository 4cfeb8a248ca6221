"""The session directory on real sockets: hosts push their lists to the admin API (per-host
tokens, size limits, bad JSON, going stale), a `command` source runs a real program, and the
balancer routes by what the hosts said (reason=session / no-session) in front of fake RDP
servers."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import load_config, parse_config
from tests.component.test_ctl import CTL, run_ctl
from tests.support.balancer import advance_clock, farm_config, running, wait_until
from tests.support.fakes import rdp_connect, start_farm, where

WAIT_S = 30.0  # bound of every poll

TOKENS = {"TS01": "ts01-push-token-0123456789", "TS02": "ts02-push-token-0123456789",
          "TS03": "ts03-push-token-0123456789"}


def secret(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def push_config(tmp_path: Path, farm: list, extra: str = "", stale_after: str = "60s") -> str:  # type: ignore[type-arg]
    tokens = secret(tmp_path / "push.toml", "".join(f'{k} = "{v}"\n' for k, v in TOKENS.items()))
    sessions = f'[sessions]\nsource = "push"\npush_tokens = "{tokens}"\nstale_after = "{stale_after}"\n{extra}'
    return farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db") + sessions


async def push(bal, server: str, doc: object, token: str | None = None, raw: bytes | None = None) -> tuple[int, dict]:  # type: ignore[no-untyped-def,type-arg]
    url = f"http://127.0.0.1:{bal.admin.port}/api/v1/hosts/{server}/sessions"
    headers = {"Authorization": f"Bearer {token or TOKENS[server]}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.put(url, data=raw if raw is not None else json.dumps(doc),
                                                         headers=headers) as resp:
        return resp.status, await resp.json()


async def get(bal, path: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{bal.admin.port}{path}") as resp:
        return await resp.json()  # type: ignore[no-any-return]


def last_reason(bal, user: str) -> str:  # type: ignore[no-untyped-def]
    return next(d["reason"] for d in reversed(bal.ctx.decisions) if d.get("user") == user)


async def test_pushed_sessions_route_a_returning_user_and_correct_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(push_config(tmp_path, farm, 'logon_grace = "0.2s"\n')) as bal:
        port = bal.addresses[0][1]
        await bal.ops.set_sticky("alice", "TS01")  # the table's guess
        for name in TOKENS:
            mine = [{"user": "alice", "domain": "CORP", "state": "disconnected", "id": "7"}]
            sessions = mine if name == "TS03" else []
            assert (await push(bal, name, {"sessions": sessions}))[0] == 200
        assert await where(port, "alice") == "TS03"
        assert last_reason(bal, "alice") == "session"
        entry = bal.table.get("alice", time.time())
        assert entry is not None and entry.server == "TS03"  # corrected
        hosts = await get(bal, "/api/v1/hosts")
        assert {h["server"]: h["sessions"] for h in hosts["hosts"]} == {"TS01": 0, "TS02": 0, "TS03": 1}
        # a user with an entry but no session anywhere is balanced anew, once the evidence covers
        # the entry: bob logged on and off, the entry is older than the logon grace, every host
        # answered since
        assert (await push(bal, "TS02", {"sessions": [{"user": "bob"}]}))[0] == 200
        await bal.ops.set_sticky("bob", "TS02")
        bob = bal.table.get("bob", bal.clock())
        assert bob is not None
        advance_clock(monkeypatch, 0.25)  # past logon_grace = "0.2s"
        assert bal.clock() - bob.last_used > 0.2
        for name in TOKENS:
            assert (await push(bal, name, {"sessions": mine if name == "TS03" else []}))[0] == 200
        await where(port, "bob")
        assert last_reason(bal, "bob") == "no-session"
    for s in farm:
        await s.stop()


async def test_a_push_needs_the_hosts_own_token(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(push_config(tmp_path, farm)) as bal:
        status, body = await push(bal, "TS01", {"sessions": []}, token=TOKENS["TS02"])
        assert status == 401 and "TS01" in body["error"]
        status, body = await push(bal, "TS09", {"sessions": []}, token=TOKENS["TS01"])
        assert status == 404
        assert bal.router.host_sessions is not None and "TS01" not in bal.router.host_sessions.reports
        # a host token is no admin token
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{bal.admin.port}/api/v1/servers/TS01/state", json={"state": "maint"},
                headers={"Authorization": f"Bearer {TOKENS['TS01']}"}) as resp:
            assert resp.status in (401, 403)
    for s in farm:
        await s.stop()


@pytest.mark.parametrize(("raw", "expected"), [
    (b"{not json", "Invalid JSON"),
    (b'{"sessions": [{"state": "active"}]}', "sessions.0.user: Field required"),
    (b'{"sessions": [{"user": "a", "state": "asleep"}]}', "sessions.0.state"),
    (b'{"sessions": [], "extra": 1}', "extra: Extra inputs are not permitted"),
    (b'{"sessions": [{"user": "a", "logon": "2026-12-02T08:00:00"}]}', "needs its zone"),
    (b'{}', 'give either "sessions"'),
    (b'{"quser": "garbage"}', "quser: expected quser's header line"),
])
async def test_a_bad_push_is_refused_with_the_field_named_and_changes_nothing(
        tmp_path: Path, raw: bytes, expected: str) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(push_config(tmp_path, farm)) as bal:
        assert (await push(bal, "TS01", {"sessions": [{"user": "carol"}]}))[0] == 200
        status, body = await push(bal, "TS01", None, raw=raw)
        assert status == 400 and expected in body["error"], body
        assert bal.router.host_sessions is not None
        assert [s.user for s in bal.router.host_sessions.reports["TS01"].sessions] == ["carol"]
    for s in farm:
        await s.stop()


async def test_a_push_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(push_config(tmp_path, farm)) as bal:
        big = json.dumps({"sessions": [{"user": "u" * 200, "id": str(i)} for i in range(6000)]}).encode()
        status, body = await push(bal, "TS01", None, raw=io.BytesIO(big))  # type: ignore[arg-type]
        assert status == 413 and "larger than" in body["error"]
    for s in farm:
        await s.stop()


async def test_a_host_that_stops_pushing_goes_stale_and_the_table_decides_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lists age on the process clock, which the test moves past stale_after (nobody pushes
    again) instead of waiting for it."""
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(push_config(tmp_path, farm, stale_after="60s")) as bal:
        port = bal.addresses[0][1]
        await bal.ops.set_sticky("dave", "TS01")
        for name in TOKENS:
            assert (await push(bal, name, {"sessions": [{"user": "dave"}] if name == "TS02" else []}))[0] == 200
        assert await where(port, "dave") == "TS02"
        assert last_reason(bal, "dave") == "session"
        await bal.ops.set_sticky("dave", "TS01")
        hosts = await get(bal, "/api/v1/hosts")
        assert all(h["fresh"] for h in hosts["hosts"]), hosts
        advance_clock(monkeypatch, 50)
        hosts = await get(bal, "/api/v1/hosts")
        assert all(h["fresh"] for h in hosts["hosts"]), hosts  # not before stale_after
        advance_clock(monkeypatch, 11)
        hosts = await get(bal, "/api/v1/hosts")
        assert not any(h["fresh"] for h in hosts["hosts"]), hosts
        assert await where(port, "dave") == "TS01"  # the lists are no evidence now
        assert last_reason(bal, "dave") == "sticky-hit"
    for s in farm:
        await s.stop()


async def test_a_quser_push_from_a_windows_host(tmp_path: Path) -> None:
    """The Windows push script sends quser's own text; the balancer parses it (hosts/quser.py)."""
    farm = await start_farm("TS01", "TS02", "TS03")
    quser = (" USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME\n"
             ">svc-push              rdp-tcp#3           2  Active          .  12/2/2026 8:59 AM\n"
             " erin                                      3  Disc        1:05  12/2/2026 7:30 AM\n")
    async with running(push_config(tmp_path, farm)) as bal:
        for name in TOKENS:
            doc = {"quser": quser, "deny_new": False} if name == "TS02" else {"sessions": []}
            assert (await push(bal, name, doc))[0] == 200
        assert await where(bal.addresses[0][1], "erin") == "TS02"
        listed = await get(bal, "/api/v1/hosts/TS02/sessions")
        assert [(s["user"], s["state"], s["id"]) for s in listed["sessions"]] == [
            ("svc-push", "active", "2"), ("erin", "disconnected", "3")]
    for s in farm:
        await s.stop()


async def test_a_command_source_runs_a_real_program(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    script = tmp_path / "list.py"
    script.write_text("import json, sys\n"
                      "server = sys.argv[1]\n"
                      "if server == 'TS03': sys.exit('TS03 is unreachable from here')\n"
                      "print(json.dumps({'sessions': [{'user': 'frank', 'id': '1'}] if server == 'TS01' else []}))\n")
    # a list stays evidence for 60 s: TS01 answers every second, a loaded machine is late by far less
    extra = f'command = ["{sys.executable}", "{script}", "{{server}}"]\ninterval = "1s"\nstale_after = "60s"\n'
    cfg = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db") + \
        f'[sessions]\nsource = "command"\n{extra}'
    async with running(cfg) as bal:
        directory = bal.router.host_sessions
        assert directory is not None

        def polled() -> bool:  # TS01 and TS02 answered, TS03's failure is recorded
            answered = {n for n, r in directory.reports.items() if r.at is not None}
            return {"TS01", "TS02"} <= answered and "TS03" in directory.reports

        await wait_until(polled, WAIT_S, 0.05, describe=lambda: f"reports: {directory.reports!r}, "
                                                              f"poller: {bal.hosts.stats!r}")
        assert await where(bal.addresses[0][1], "frank") == "TS01"
        hosts = {h["server"]: h for h in (await get(bal, "/api/v1/hosts"))["hosts"]}
        assert hosts["TS03"]["last_error"].endswith("exited with 1: TS03 is unreachable from here")
        assert hosts["TS03"]["fresh"] is False and hosts["TS01"]["fresh"] is True
        assert bal.hosts.stats["TS03"].failures >= 1
    for s in farm:
        await s.stop()


async def test_ctl_hosts_and_sessions_of_a_host(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    async with running(push_config(tmp_path, farm)) as bal:
        for name in TOKENS:
            sessions = [{"user": "gina", "state": "disconnected", "id": "4"}] if name != "TS03" else []
            await push(bal, name, {"sessions": sessions, "deny_new": name == "TS02"})
        url = f"http://127.0.0.1:{bal.admin.port}"
        listed = await run_ctl([*CTL, "--url", url, "hosts"], {})
        assert listed.code == 0, listed.err
        rows = {line.split()[0]: line.split() for line in listed.out.splitlines()[1:] if line.startswith("TS")}
        assert rows["TS01"][1:5] == ["push", "1", "0", "1"] and "refused" in rows["TS02"]
        assert "users with sessions on several hosts" in listed.out and "TS01, TS02" in listed.out
        one = await run_ctl([*CTL, "--url", url, "sessions", "--host", "TS01"], {})
        assert one.code == 0 and "gina" in one.out and "disconnected" in one.out, one.out
    for s in farm:
        await s.stop()


async def test_push_tokens_rotate_on_reload_and_the_directory_keeps_what_it_knows(tmp_path: Path) -> None:
    farm = await start_farm("TS01", "TS02", "TS03")
    config = tmp_path / "rdpb.toml"
    config.write_text(push_config(tmp_path, farm))
    bal = Balancer(parse_config(config.read_text(), str(config)))
    bal.reloader.status.path = str(config)
    await bal.start()
    try:
        assert (await push(bal, "TS01", {"sessions": [{"user": "ivy"}]}))[0] == 200
        rotated = {**TOKENS, "TS01": "ts01-rotated-token-0123456789"}
        secret(tmp_path / "push.toml", "".join(f'{k} = "{v}"\n' for k, v in rotated.items()))
        assert await bal.reloader.reload() is None
        assert (await push(bal, "TS01", {"sessions": []}))[0] == 401  # the old token is gone
        assert bal.router.host_sessions is not None
        assert [s.user for s in bal.router.host_sessions.reports["TS01"].sessions] == ["ivy"]  # kept over the reload
        assert (await push(bal, "TS01", {"sessions": []}, token=rotated["TS01"]))[0] == 200
        assert bal.router.host_sessions.reports["TS01"].sessions == ()
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()


async def test_a_second_connection_during_a_logon_stays_with_it_and_explain_says_why(tmp_path: Path) -> None:
    """Issue 24, item 1, on real sockets: alice (known to the hosts: she logged on and off before)
    is placed on a host and her connection stays open; a second later every host pushes a list
    that does not show her yet. Her second connection goes to the same host, and `ctl explain`
    shows why her entry stands, with its last use and the logon grace."""
    farm = await start_farm("TS01", "TS02", "TS03")
    token_file = secret(tmp_path / "admin.token", "an-admin-token-0123456789\n")
    config = push_config(tmp_path, farm).replace('[admin]\nlisten = "127.0.0.1:0"\n',
                                                  f'[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "{token_file}"\n')
    async with running(config) as bal:
        port = bal.addresses[0][1]
        for name in TOKENS:  # she had a session on TS03 once, long gone
            assert (await push(bal, name, {"sessions": [{"user": "alice"}] if name == "TS03" else []}))[0] == 200
        for name in TOKENS:
            assert (await push(bal, name, {"sessions": []}))[0] == 200
        first = await rdp_connect(port, "alice")
        try:
            for name in TOKENS:  # every host answers after the placement: not listed yet
                assert (await push(bal, name, {"sessions": []}))[0] == 200
            assert await where(port, "alice") == first.server
            assert last_reason(bal, "alice") == "sticky-hit"
            url = f"http://127.0.0.1:{bal.admin.port}"
            run = await run_ctl([*CTL, "--url", url, "--token-file", str(token_file), "explain", "alice"], {})
        finally:
            await first.close()
        assert run.code == 0, run.err
        print(run.out)
        assert f"the entry for {first.server} stands: 1 open or opening connection(s)" in run.out
        assert "logon grace 120s" in run.out and "logon pending on" in run.out
        assert "decision: sticky-hit" in run.out
    for s in farm:
        await s.stop()


async def test_a_reload_that_changes_strip_domain_rekeys_the_directory(tmp_path: Path) -> None:
    """Issue 24, item 4: with strip_domain = true the directory holds `CORP\\alice` as `alice`;
    reloaded with strip_domain = false, a cookie `CORP\\alice` (mstsc sends what was typed) must
    find her session without a restart."""
    farm = await start_farm("TS01", "TS02", "TS03")
    path = tmp_path / "c.toml"
    base = push_config(tmp_path, farm)
    path.write_text(base + "[identity]\nstrip_domain = true\n")
    bal = Balancer(load_config(path))
    bal.reloader.status.path = str(path)
    await bal.start()
    try:
        port = bal.addresses[0][1]
        for name in TOKENS:
            mine = [{"user": "alice", "domain": "CORP", "state": "disconnected", "id": "5"}]
            assert (await push(bal, name, {"sessions": mine if name == "TS02" else []}))[0] == 200
        path.write_text(base + "[identity]\nstrip_domain = false\n")
        assert await bal.reloader.reload() is None
        assert await where(port, "CORP\\alice") == "TS02"
        assert last_reason(bal, "corp\\alice") == "session"
        assert await where(port, "alice") == "TS02"  # without a domain: the one CORP\alice listed
        assert last_reason(bal, "alice") == "session"
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()
