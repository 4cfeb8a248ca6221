"""`rdpbalancer ctl` as an operator runs it: a real process, over real HTTP, against a running balancer.

The balancer runs in the test's event loop; ctl (blocking urllib) runs as a subprocess awaited
with asyncio, so the balancer keeps serving while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from tests.support.balancer import farm_config, refused_port, wait_until
from tests.support.fakes import FakeRdpServer, rdp_connect, start_farm, where

ROOT = Path(__file__).resolve().parents[2]
DUMP = ROOT / "tests" / "data" / "haproxy" / "show-table-BK_RDP.txt"
TOKEN = "ctl-test-token-0123456789abcdef"
# until cli.py wires `ctl`, run its own entry point; `python -m rdpbalancer ctl` runs the same code
CTL = [sys.executable, "-m", "rdpbalancer", "ctl"]
CTL_TIMEOUT_S = 60.0
HEALTH = 'check = "tcp"\ninterval = "1s"\ntimeout = "500ms"'


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Farm:
    bal: Balancer
    servers: list[FakeRdpServer]
    tmp: Path
    url: str
    token_file: Path
    config: Path

    @property
    def port(self) -> int:
        return self.bal.addresses[0][1]

    async def ctl(self, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
                  auth: bool = True) -> Run:
        """Run ctl with --url (and --token-file unless auth is False), or exactly `args` when env is given."""
        where_args = ["--url", self.url, *(["--token-file", str(self.token_file)] if auth else [])]
        argv = [*CTL, *(args if env is not None else [*where_args, *args])]
        return await run_ctl(argv, env or {}, stdin)


async def run_ctl(argv: list[str], env: dict[str, str], stdin: bytes | None = None) -> Run:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RDPBALANCER_")}
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env={**clean, **env}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), CTL_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    stack = contextlib.ExitStack()  # TS09's port, held (refusing) until the end
    servers = await start_farm("TS01", "TS02", "TS08")
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    dead_port = stack.enter_context(refused_port())
    dead = ("TS09", f"127.0.0.1:{dead_port}", 1)  # nothing listens there: health goes down
    text = farm_config([*((s.name, s.address, 1) for s in servers), dead], tmp_path / "sticky.db",
                       health=HEALTH, extra=f'token_file = "{token_file}"\n')
    config = tmp_path / "balancer.toml"
    config.write_text(text)
    bal = Balancer(parse_config(text, str(config)))
    bal.reloader.status.path = str(config)
    await bal.start()
    # the same file, with the admin port the balancer got: what an operator's `-c` would read
    config.write_text(text.replace('listen = "127.0.0.1:0"\ntoken_file', f'listen = "127.0.0.1:{bal.admin.port}"\n'
                                                                        "token_file"))
    try:
        yield Farm(bal, servers, tmp_path, f"http://127.0.0.1:{bal.admin.port}", token_file, config)
    finally:
        await bal.stop()
        for s in servers:
            await s.stop()
        stack.close()


def table_rows(text: str) -> list[list[str]]:
    """The rows of a ctl table, header left out; cells are split on runs of 2+ blanks."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:]]


def by_name(text: str) -> dict[str, list[str]]:
    return {row[0]: row for row in table_rows(text)}


# -- servers, state, weight -------------------------------------------------------------------------------

async def test_servers_table_and_json(farm: Farm) -> None:
    assert await where(farm.port, "alice") in ("TS01", "TS02", "TS08")
    await wait_until(lambda: not farm.bal.router.condition("TS09").up, timeout_s=10)
    run = await farm.ctl("servers")
    assert run.code == 0, run.err
    header = run.out.splitlines()[0].split()
    assert header[:4] == ["NAME", "POOLS(weights)", "STATE", "HEALTH"] and header[-2:] == ["LAST", "ERROR"]
    rows = by_name(run.out)
    assert set(rows) == {"TS01", "TS02", "TS08", "TS09"}
    assert rows["TS09"][1:4] == ["default(1)", "ready", "down"] and "refused" in rows["TS09"][-1].lower()
    assert sum(int(rows[n][6]) for n in rows) == 1  # HOMED: alice
    as_json = await farm.ctl("servers", "--json")  # options after the command too
    assert as_json.code == 0 and {s["name"] for s in as_json.json()["servers"]} == set(rows)


async def test_drain_ready_maint_and_weight(farm: Farm) -> None:
    for state in ("drain", "maint", "ready"):
        run = await farm.ctl(state, "TS02")
        assert run.code == 0, run.err
        assert run.out.strip().startswith(f"TS02: state {state}")
        assert str(farm.bal.router.condition("TS02").admin) == state
    run = await farm.ctl("weight", "TS01", "7")
    assert run.code == 0 and "default(7)" in run.out
    assert farm.bal.ops.weight_overrides == {"TS01": 7}
    run = await farm.ctl("--json", "weight", "TS01", "0")
    assert run.code == 0 and run.json()["pools"] == [
        {"pool": "default", "weight": 0, "effective_weight": 0, "max_sessions": None, "backup": False}]


async def test_server_errors(farm: Farm) -> None:
    run = await farm.ctl("drain", "NOPE")
    assert (run.code, run.out) == (1, "") and "404: no server named 'NOPE'" in run.err
    run = await farm.ctl("weight", "TS01", "300")
    assert run.code == 2 and "weight must be a whole number from 0 to 256" in run.err
    run = await farm.ctl("frobnicate")
    assert run.code == 2 and "invalid choice" in run.err


# -- sessions --------------------------------------------------------------------------------------------

async def test_sessions_and_close(farm: Farm) -> None:
    client = await rdp_connect(farm.port, "bob")
    try:
        run = await farm.ctl("sessions")
        assert run.code == 0, run.err
        (session,) = [row for row in table_rows(run.out) if row[1] == "bob"]
        assert session[3] == client.server and session[5] == "relay"
        closed = await farm.ctl("close", session[0])
        assert closed.code == 0 and closed.out.strip() == f"closed session {session[0]}"
        await wait_until(lambda: not farm.bal.ctx.sessions, timeout_s=5)
        with contextlib.suppress(ConnectionResetError):  # the balancer aborts the session
            assert await asyncio.wait_for(client.reader.read(), 5) == b""
        gone = await farm.ctl("close", session[0])
        assert gone.code == 1 and f"404: no session '{session[0]}'" in gone.err
        empty = await farm.ctl("sessions", "--json")
        assert empty.json() == {"sessions": []}
    finally:
        client.writer.transport.abort()


# -- sticky ----------------------------------------------------------------------------------------------------

async def test_sticky_set_get_del_flush(farm: Farm) -> None:
    run = await farm.ctl("sticky", "set", "alice", "TS02", "--pool", "default")
    assert (run.code, run.out.strip()) == (0, "alice -> TS02 (pool default)")
    assert await where(farm.port, "alice") == "TS02"
    got = await farm.ctl("sticky", "get", "ALICE")  # keys are case-insensitive, as the balancer does
    assert got.code == 0 and "server:        TS02" in got.out and "pool:          default" in got.out
    assert (await farm.ctl("sticky", "get", "alice", "--json")).json()["server"] == "TS02"
    bad = await farm.ctl("sticky", "set", "alice", "TS02", "--pool", "nope")
    assert bad.code == 1 and "400: server TS02 is not in pool nope" in bad.err
    deleted = await farm.ctl("sticky", "del", "alice")
    assert (deleted.code, deleted.out.strip()) == (0, "deleted the entry of alice")
    missing = await farm.ctl("sticky", "get", "alice")
    assert missing.code == 1 and "404: no sticky entry for 'alice'" in missing.err
    for user in ("u1", "u2", "u3"):
        assert (await farm.ctl("sticky", "set", user, "TS08")).code == 0
    flushed = await farm.ctl("sticky", "flush", "TS08")
    assert (flushed.code, flushed.out.strip()) == (0, "TS08: 3 entries deleted")
    assert farm.bal.table.homed("TS08") == 0


async def test_odd_user_names_travel_and_print_safely(farm: Farm) -> None:
    for user in ("a/b%c d", "flush", "import", "josé", "evil[2J\u202ename"):
        run = await farm.ctl("sticky", "set", user, "TS01")
        assert run.code == 0, (user, run.err)
        got = await farm.ctl("sticky", "get", user, "--json")
        assert got.json()["user"] == user.lower()
    listing = await farm.ctl("sticky", "get", "evil[2J\u202ename")
    assert "\u202e" not in listing.out
    assert "user:          evil[2j\\u202ename" in listing.out
    assert "josé" in (await farm.ctl("sticky", "get", "josé")).out
    # a control character is in no account name: refused, and the error prints safely too
    refused = await farm.ctl("sticky", "set", "evil\x1b[2J", "TS01")
    assert refused.code == 1 and "\x1b" not in refused.err
    assert "is not a user name: control characters are not allowed" in refused.err


def entries_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"entries": entries}))
    return path


async def test_export_import_round_trip(farm: Farm) -> None:
    servers = ["TS01", "TS02", "TS08"]
    users = [{"user": f"user{i:04d}", "server": servers[i % 3]} for i in range(1200)]  # 3 import chunks
    users.append({"user": "zoë\u202e", "server": "TS01", "pool": "default"})
    run = await farm.ctl("sticky", "import", str(entries_file(farm.tmp / "in.json", users)))
    assert (run.code, run.out.strip()) == (0, "imported 1201 entries"), run.err
    exported = await farm.ctl("sticky", "export")  # 2 pages of at most 1000
    assert exported.code == 0 and "exported 1201 entries" in exported.err
    saved = farm.tmp / "export.json"
    saved.write_text(exported.out)
    before = {e["user"]: (e["server"], e["pool"]) for e in exported.json()["entries"]}
    assert len(before) == 1201 and before["zoë\u202e"] == ("TS01", "default")
    for server in servers:
        assert (await farm.ctl("sticky", "flush", server)).code == 0
    assert len(farm.bal.table) == 0
    again = await farm.ctl("sticky", "import", "-", stdin=saved.read_bytes())
    assert again.code == 0 and again.out.strip() == "imported 1201 entries"
    to_file = await farm.ctl("sticky", "export", "-o", str(farm.tmp / "again.json"))
    assert to_file.code == 0 and (farm.tmp / "again.json").stat().st_mode & 0o777 == 0o600
    after = {e["user"]: (e["server"], e["pool"]) for e in json.loads((farm.tmp / "again.json").read_text())["entries"]}
    assert after == before


async def test_import_reports_each_error_with_its_place(farm: Farm) -> None:
    entries = [{"user": "ok1", "server": "TS01"}, {"user": "lost", "server": "GONE"}, {"server": "TS01"},
               {"user": "ok2", "server": "TS02"}]
    run = await farm.ctl("sticky", "import", "--chunk", "2", str(entries_file(farm.tmp / "e.json", entries)))
    assert run.code == 1
    assert run.out.strip() == "imported 2 entries, 2 error(s)"
    assert "entries[1] (user lost): no server named 'GONE'" in run.err
    assert "entries[2]: entry.user: Field required" in run.err  # numbered across chunks
    as_json = await farm.ctl("--json", "sticky", "import", str(farm.tmp / "e.json"))
    assert as_json.code == 1 and as_json.json()["imported"] == 2 and len(as_json.json()["errors"]) == 2
    (farm.tmp / "junk.json").write_text("[not json")
    junk = await farm.ctl("sticky", "import", str(farm.tmp / "junk.json"))
    assert junk.code == 2 and "not JSON" in junk.err
    nofile = await farm.ctl("sticky", "import", str(farm.tmp / "missing.json"))
    assert nofile.code == 2 and "cannot read" in nofile.err


async def test_import_haproxy_dump(farm: Farm) -> None:
    run = await farm.ctl("sticky", "import-haproxy", str(DUMP))
    assert (run.code, run.out.strip(), run.err) == (0, "imported 3 entries", "")
    for user, server in (("alice", "TS01"), ("bob", "TS02"), ("carol", "TS08")):
        assert await where(farm.port, user) == server


async def test_import_haproxy_old_dump_needs_server_names(farm: Farm) -> None:
    dump = farm.tmp / "old.txt"
    dump.write_text("# table: BK_RDP, type: string, size:10240, used:3\n"
                    "0x1: key=dave use=0 exp=1000 server_id=2\n"
                    "0x2: key=erin use=0 exp=1000 server_id=9\n"
                    "Unknown command, try 'help'\n")
    dry = await farm.ctl("sticky", "import-haproxy", str(dump), "--servers", "TS01,TS02", "--dry-run")
    assert dry.code == 1 and dry.json() == {"entries": [{"user": "dave", "server": "TS02"}]}
    assert len(farm.bal.table) == 0
    run = await farm.ctl("sticky", "import-haproxy", str(dump), "--servers", "TS01,TS02")
    assert run.code == 1 and run.out.strip() == "imported 1 entry, 2 line(s) skipped"
    assert "line 4: not a table entry" in run.err and "key=erin server_id=9" in run.err
    assert await where(farm.port, "dave") == "TS02"
    unnamed = await farm.ctl("sticky", "import-haproxy", str(dump), "--json")
    assert unnamed.code == 1 and unnamed.json()["imported"] == 0 and len(unnamed.json()["skipped"]) == 3


# -- reload, explain, config, events, decisions ---------------------------------------------------------------

async def test_reload(farm: Farm) -> None:
    run = await farm.ctl("reload")
    assert run.code == 0 and run.out.strip() == f"reloaded {farm.config} (reloads: 1 ok, 0 failed)"
    good = farm.config.read_text()
    farm.config.write_text(good.replace('ttl = "8h"', 'ttl = "forever"'))
    refused = await farm.ctl("reload")
    assert refused.code == 1 and "422:" in refused.err and "sticky.ttl" in refused.err
    status = await farm.ctl("config")
    assert status.code == 0 and "reloads:           1 ok, 1 failed" in status.out
    assert "last reload error: " in status.out and "sticky.ttl" in status.out


async def test_explain(farm: Farm) -> None:
    await farm.ctl("sticky", "set", "alice", "TS08")
    run = await farm.ctl("explain", "CORP\\Alice", "--source", "10.1.2.3")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "user: CORP\\Alice -> key alice"
    assert "decision: sticky-hit   pool: default" in run.out and "server: TS08;" in run.out
    as_json = await farm.ctl("explain", "alice", "--json")
    assert as_json.json()["decision"]["servers"][0] == "TS08"
    nobody = await farm.ctl("explain")
    assert nobody.code == 0 and nobody.out.startswith("user: - (no cookie)")


async def test_config_events_and_decisions(farm: Farm) -> None:
    await wait_until(lambda: not farm.bal.router.condition("TS09").up, timeout_s=10)
    assert await where(farm.port, "carol") in ("TS01", "TS02", "TS08")
    config = await farm.ctl("config")
    assert config.code == 0 and f"file:              {farm.config}" in config.out
    events = await farm.ctl("events")
    assert events.code == 0 and ["TS09", "unknown -> down"] in [row[1:3] for row in table_rows(events.out)]
    decisions = await farm.ctl("decisions")
    rows = [row for row in table_rows(decisions.out) if row[3] == "carol"]
    assert decisions.code == 0 and rows and rows[0][6] == "new"
    assert (await farm.ctl("decisions", "--json")).json()["decisions"][0]["user"] == "carol"


# -- where the balancer is, and what goes wrong ---------------------------------------------------------

async def test_config_file_gives_url_and_token(farm: Farm) -> None:
    run = await farm.ctl("-c", str(farm.config), "drain", "TS01", env={})
    assert run.code == 0, run.err
    wildcard = farm.tmp / "wildcard.toml"  # [admin] listen on 0.0.0.0: ctl connects to 127.0.0.1
    wildcard.write_text(farm.config.read_text().replace('listen = "127.0.0.1:', 'listen = "0.0.0.0:'))
    run = await farm.ctl("ready", "TS01", "-c", str(wildcard), env={})
    assert run.code == 0 and str(farm.bal.router.condition("TS01").admin) == "ready"


async def test_environment_gives_url_and_token_and_flags_win(farm: Farm) -> None:
    env = {"RDPBALANCER_URL": farm.url, "RDPBALANCER_TOKEN": TOKEN}
    assert (await farm.ctl("maint", "TS02", env=env)).code == 0
    with refused_port() as port:
        unreachable = f"http://127.0.0.1:{port}"
        beaten = await farm.ctl("-c", str(farm.config), "servers", env={"RDPBALANCER_URL": unreachable})
        assert beaten.code == 1 and f"cannot reach {unreachable}: connection refused" in beaten.err  # env > config
        flag = await farm.ctl("--url", farm.url, "servers", env={"RDPBALANCER_URL": unreachable})
    assert flag.code == 0  # flag > env
    wrong_file = farm.tmp / "wrong.token"
    wrong_file.write_text("not-the-token-at-all\n")
    wrong = await farm.ctl("--url", farm.url, "--token-file", str(wrong_file), "ready", "TS02", env=env)
    assert wrong.code == 1 and "the token came from --token-file" in wrong.err  # flag > env, for tokens too


async def test_wrong_or_missing_token(farm: Farm) -> None:
    env = {"RDPBALANCER_URL": farm.url, "RDPBALANCER_TOKEN": "wrong-token-wrong-token"}
    run = await farm.ctl("drain", "TS01", env=env)
    assert (run.code, run.out) == (1, "")
    assert "401: missing or wrong token" in run.err and "the token came from RDPBALANCER_TOKEN" in run.err
    missing = await farm.ctl("drain", "TS01", auth=False)
    assert missing.code == 1 and "no token given: use --token-file FILE" in missing.err
    assert str(farm.bal.router.condition("TS01").admin) == "ready"
    assert (await farm.ctl("servers", auth=False)).code == 0  # reads are open by default
    empty = farm.tmp / "empty.token"
    empty.write_text("\n")
    bad_file = await farm.ctl("--url", farm.url, "--token-file", str(empty), "servers", env={})
    assert bad_file.code == 2 and "is empty" in bad_file.err


async def test_unreachable_and_bad_urls() -> None:
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        run = await run_ctl([*CTL, "--url", url, "servers"], {})
        assert (run.code, run.out) == (1, "")
        assert run.err.strip() == f"rdpbalancer ctl: cannot reach {url}: connection refused"
        default = await run_ctl([*CTL, "--timeout", "2", "servers"], {"RDPBALANCER_URL": url.removeprefix("http://")})
        assert default.code == 1 and f"cannot reach {url}" in default.err  # scheme added
    bad = await run_ctl([*CTL, "--url", "ftp://127.0.0.1", "servers"], {})
    assert bad.code == 2 and "invalid URL" in bad.err
    broken = await run_ctl([*CTL, "-c", "/nonexistent/balancer.toml", "servers"], {})
    assert broken.code == 2 and "invalid configuration" in broken.err
