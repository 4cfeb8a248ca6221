"""The admin surface as an attacker on the same host meets it: a real balancer, a real admin server
on 127.0.0.1:0, real sessions through fake RDP servers, real HTTP (and raw bytes where a client
library would refuse to send them).

tests/component/test_admin_api.py covers the API's behaviour with the token; this file covers what
happens without it: every mutating route refused with no state change (the handoff too), the
read-only mode for every route, the body limit however the body is framed, the start refused for
a token file others can read, loopback by default, and the headers that keep browsers in line.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import ipaddress
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rdpbalancer.admin.api import LOOPBACK_HOSTS, MAX_BODY_BYTES, Auth
from rdpbalancer.admin.server import AdminError
from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from rdpbalancer.relay.listener import ListenError
from tests.support.balancer import farm_config, wait_until
from tests.support.fakes import FakeRdpServer, RdpClient, rdp_connect, start_farm, was_cut, where

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-security-test-token-0123456789"
ANSWER_S = 5.0  # a refusal is immediate; this only bounds a hang


@dataclass
class Secured:
    bal: Balancer
    farm: list[FakeRdpServer]
    base: str
    http: aiohttp.ClientSession
    config_path: Path
    bob: RdpClient  # a live session, the target of DELETE /api/v1/sessions/{id}
    handoffs: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.bal.addresses[0][1]

    async def call(self, method: str, path: str, body: Any = None, *,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with asyncio.timeout(ANSWER_S), \
                self.http.request(method, self.base + path, json=body, headers=headers or {}) as resp:
            return resp.status, await resp.json() if resp.content_type == "application/json" else await resp.text()

    def session_id(self, user: str) -> str:
        return next(s.id for s in self.bal.ctx.sessions.values() if s.user == user)

    async def state(self) -> dict[str, Any]:
        """Everything a mutation could change, as the API and the sticky file see it."""
        return {
            "servers": (await self.call("GET", "/api/v1/servers"))[1],
            "sticky": (await self.call("GET", "/api/v1/sticky"))[1],
            "sessions": sorted(s.id for s in self.bal.ctx.sessions.values()),
            "reloads": (await self.call("GET", "/api/v1/config"))[1]["reloads_ok"],
            "file": sorted((r.key, r.server) for r in self.bal.store.read_only()),
            "handoffs": len(self.handoffs),
        }

    def mutations(self) -> list[tuple[str, str, Any]]:
        """Every mutating route, each aimed at something that exists, so a leak would show."""
        home = self.bal.table.get("alice", self.bal.ctx.clock())
        assert home is not None
        other = "TS02" if home.server == "TS01" else "TS01"
        return [
            ("POST", "/api/v1/servers/TS01/state", {"state": "maint"}),
            ("POST", "/api/v1/servers/TS01/weight", {"weight": 0}),
            ("PUT", "/api/v1/sticky/alice", {"server": other}),
            ("DELETE", "/api/v1/sticky/alice", None),
            ("POST", "/api/v1/sticky/flush", {"server": home.server}),
            ("POST", "/api/v1/sticky/import", {"entries": [{"user": "mallory", "server": "TS01"}]}),
            ("DELETE", f"/api/v1/sessions/{self.session_id('bob')}", None),
            ("POST", "/api/v1/reload", None),  # the file on disk differs: a reload would show
            ("POST", "/api/v1/handoff", None),
        ]


async def _start(tmp_path: Path, admin_extra: str) -> tuple[Balancer, list[FakeRdpServer], Path]:
    farm = await start_farm("TS01", "TS02")
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db", extra=admin_extra)
    path = tmp_path / "c.toml"
    path.write_text(text)
    bal = Balancer(parse_config(text, str(path)))
    bal.reloader.status.path = str(path)
    await bal.start()
    # what an unauthorised reload would pick up: TS02's weight 1 -> 5
    path.write_text(text.replace(f'name = "TS02", address = "{farm[1].address}", weight = 1',
                                 f'name = "TS02", address = "{farm[1].address}", weight = 5'))
    return bal, farm, path


@asynccontextmanager
async def _secured(tmp_path: Path, *, with_token: bool) -> AsyncIterator[Secured]:
    extra = ""
    if with_token:
        token_file = tmp_path / "admin.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        extra = f'token_file = "{token_file}"\n'
    bal, farm, path = await _start(tmp_path, extra)
    bob = None
    try:
        await where(bal.addresses[0][1], "alice")  # a sticky entry, in the table and the file
        bob = await rdp_connect(bal.addresses[0][1], "bob")
        # settled: alice's session has ended (its end updates her entry) and bob's is relaying
        await wait_until(lambda: [s.user for s in bal.ctx.sessions.values()] == ["bob"]
                         and bal.store.unsaved == 0 and len(bal.store.read_only()) == 2)
        async with aiohttp.ClientSession() as http:
            s = Secured(bal, farm, f"http://127.0.0.1:{bal.admin.port}", http, path, bob)

            def recorded_handoff() -> bool:  # the real one would start a new process
                s.handoffs.append(1)
                return True

            bal.ops.on_handoff = recorded_handoff
            yield s
    finally:
        if bob is not None:
            await bob.close()
        await bal.stop()
        for server in farm:
            await server.stop()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    """A balancer with an admin token file (mode 0600)."""
    async with _secured(tmp_path, with_token=True) as s:
        yield s


@pytest.fixture
async def read_only(tmp_path: Path) -> AsyncIterator[Secured]:
    """A balancer without a token file: its API is read-only."""
    async with _secured(tmp_path, with_token=False) as s:
        yield s


async def _still_relaying(client: RdpClient) -> bool:
    client.writer.write(b"ping")
    async with asyncio.timeout(ANSWER_S):
        return await client.reader.readexactly(4) == b"ping"


# -- no mutation without the token ------------------------------------------------------------------

BAD_AUTHORIZATIONS = [
    {},
    {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": TOKEN},  # no scheme
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer "},
    {"X-Token": TOKEN, "Cookie": f"token={TOKEN}"},  # only the Authorization header counts
]


async def _refused_without_change(s: Secured, attempts: list[dict[str, str]], status: int, says: str) -> None:
    before = await s.state()
    for method, path, body in s.mutations():
        for headers in attempts:
            got, reply = await s.call(method, path, body, headers=headers)
            assert got == status and says in reply["error"], (method, path, headers, got, reply)
    await asyncio.sleep(0.1)  # a spawned handoff or a session abort would have run by now
    assert await s.state() == before
    assert await _still_relaying(s.bob)


async def test_every_mutation_is_refused_without_the_right_token(secured: Secured) -> None:
    """401 for every mutating route (the handoff included) and every wrong credential; nothing
    changes: not the servers, the table, its file, the live session, the configuration."""
    await _refused_without_change(secured, BAD_AUTHORIZATIONS, 401, "token")


async def test_without_a_token_file_every_mutation_is_refused(read_only: Secured) -> None:
    """test_admin_api checks one route; here every route, even with a plausible token."""
    await _refused_without_change(read_only, [*BAD_AUTHORIZATIONS, {"Authorization": f"Bearer {TOKEN}"}],
                                  403, "read-only")


async def test_the_right_token_opens_every_mutation(secured: Secured) -> None:
    """The counterpart of the refusals: the same requests with the token take effect (the
    handoff is recorded instead of starting a process)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path, body in secured.mutations():
        status, reply = await secured.call(method, path, body, headers=auth)
        assert status in (200, 202), (method, path, reply)
    assert await was_cut(secured.bob.reader)
    await wait_until(lambda: secured.handoffs == [1])
    servers = {s["name"]: s for s in (await secured.call("GET", "/api/v1/servers"))[1]["servers"]}
    assert servers["TS01"]["admin_state"] == "maint" and servers["TS01"]["pools"][0]["weight"] == 0
    assert servers["TS02"]["pools"][0]["weight"] == 5  # the reload read the changed file
    assert (await secured.call("GET", "/api/v1/sticky/mallory"))[0] == 200  # imported
    assert (await secured.call("GET", "/api/v1/sticky/alice"))[0] == 404  # deleted


async def test_a_non_utf8_authorization_header_is_a_401_not_a_crash(
        secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp decodes header bytes with surrogateescape; the comparison must not blow up on them
    (it did: 500 and a logged traceback per request, which any local process could trigger)."""
    for value in (b"Bearer \xff\xfe", "Bearer é".encode("latin-1"), "Bearer é".encode()):
        reader, writer = await asyncio.open_connection("127.0.0.1", secured.bal.admin.port)
        writer.write(b"POST /api/v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + value
                     + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(ANSWER_S):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert (await secured.call("GET", "/api/v1/config"))[1]["reloads_ok"] == 0


# -- the body limit -----------------------------------------------------------------------------------

async def _raw_post(port: int, head: str, body: bytes = b"") -> bytes:
    """One request as bytes; returns the status line and headers (the answer must come promptly)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + b"\r\n" + body)
        async with asyncio.timeout(ANSWER_S):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_oversized_bodies_are_refused_however_they_are_framed(secured: Secured) -> None:
    port, path = secured.bal.admin.port, "/api/v1/sticky/import"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n" \
           "Content-Type: application/json\r\n"

    # a declared length over the limit: refused at once, without waiting for the body
    answer = await _raw_post(port, head + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")

    # chunked: no length to check up front, refused once the limit is crossed
    chunk = b" " * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 1))
    answer = await _raw_post(port, head + "Transfer-Encoding: chunked\r\n", b"1\r\n{\r\n" + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")

    # small on the wire, 64 MiB once inflated: the limit counts inflated bytes
    bomb = gzip.compress(b'{"entries": [' + b" " * (64 * MAX_BODY_BYTES) + b"]}")
    assert len(bomb) < MAX_BODY_BYTES
    answer = await _raw_post(port, head + f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n", bomb)
    assert answer.startswith(b"HTTP/1.1 413 ")

    # without the token the body is never read: 401, whatever its size
    async with secured.http.post(secured.base + path, data=io.BytesIO(b" " * (2 * MAX_BODY_BYTES))) as resp:
        assert resp.status == 401

    # exactly at the limit is allowed
    exact = b'{"entries": []}'.ljust(MAX_BODY_BYTES)
    async with secured.http.post(secured.base + path, data=io.BytesIO(exact), headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()

    # and the process still serves: the API, a mutation and the RDP listener
    assert (await secured.call("GET", "/healthz"))[0] == 200
    status, _ = await secured.call("POST", "/api/v1/servers/TS02/state", {"state": "drain"},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert await where(secured.port, "carol") == "TS01"
    assert await _still_relaying(secured.bob)


# -- starting safely ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
async def test_a_token_file_others_can_read_stops_the_start(tmp_path: Path, mode: int) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    token_file.chmod(mode)
    farm = await start_farm("TS01")
    text = farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db", extra=f'token_file = "{token_file}"\n')
    try:
        bal = Balancer(parse_config(text))
        opened: list[int] = []  # the port the RDP listener took (port 0), read as it opens
        open_listeners = bal.listeners.open

        async def open_and_note(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            await open_listeners(*args, **kwargs)
            opened.extend(port for _host, port in bal.listeners.addresses)

        bal.listeners.open = open_and_note  # type: ignore[method-assign]
        with pytest.raises(AdminError) as refused:
            await bal.start()
        assert str(token_file) in str(refused.value) and f"{mode:04o}" in str(refused.value)
        assert f"chmod 600 {token_file}" in str(refused.value)
        assert opened, "the RDP listener did not open before the admin API"
        with pytest.raises(ConnectionRefusedError):  # the RDP listener did not stay open
            await asyncio.open_connection("127.0.0.1", opened[0])
    finally:
        await farm[0].stop()


def test_run_exits_naming_the_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    config = tmp_path / "c.toml"
    config.write_text(farm_config([("TS01", "127.0.0.1:1", 1)], tmp_path / "s.db",
                                  extra=f'token_file = "{token_file}"\n'))
    out = subprocess.run([sys.executable, "-m", "rdpbalancer", "run", "-c", str(config)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1, out
    assert out.stderr.strip().endswith(
        f"rdpbalancer: admin.token_file: {token_file} is accessible by group or others (mode 0644); "
        f"run: chmod 600 {token_file}"), out.stderr
    assert "Traceback" not in out.stderr


async def test_a_unix_socket_path_taken_by_a_file_is_a_clear_error(tmp_path: Path) -> None:
    taken = tmp_path / "admin.sock"
    taken.write_text("not a socket")
    farm = await start_farm("TS01")
    text = farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db", extra=f'unix_socket = "{taken}"\n')
    try:
        with pytest.raises(ListenError, match=f"cannot listen on {taken} \\(admin.unix_socket\\)"):
            await Balancer(parse_config(text)).start()
        assert taken.read_text() == "not a socket"  # never removed: only stale sockets are
    finally:
        await farm[0].stop()


def test_admin_listens_on_loopback_by_default() -> None:
    minimal = '[[pool]]\nname = "p"\nservers = [{ name = "A", address = "10.0.0.1" }]\n'
    listen = parse_config(minimal).admin.listen
    assert ipaddress.ip_address(listen.host).is_loopback and listen.port == 9000
    example = tomllib.loads((ROOT / "config.example.toml").read_text())["admin"]["listen"]
    assert ipaddress.ip_address(example.rsplit(":", 1)[0]).is_loopback


# -- what browsers are told ---------------------------------------------------------------------------

async def test_every_answer_forbids_sniffing_and_framing(secured: Secured) -> None:
    for method, path in (("GET", "/"), ("GET", "/static/dashboard.js"), ("GET", "/api/v1/servers"),
                         ("GET", "/api/v1/nothing"), ("POST", "/api/v1/reload"), ("GET", "/metrics")):
        async with secured.http.request(method, secured.base + path) as resp:
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
            assert resp.headers.get("X-Frame-Options") == "DENY", path
            assert "frame-ancestors 'none'" in resp.headers.get("Content-Security-Policy", ""), path


async def test_a_cross_origin_page_gets_no_cors_grant(secured: Secured) -> None:
    """A page on another origin cannot attach the Authorization header without a CORS grant
    (the preflight fails), and cannot read any answer."""
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    async with secured.http.options(secured.base + "/api/v1/servers/TS01/state", headers=preflight) as resp:
        assert resp.status >= 400
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    async with secured.http.get(secured.base + "/api/v1/servers", headers={"Origin": "http://evil.example"}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_rotated_token_applies_on_reload_and_an_unsafe_one_is_refused(secured: Secured) -> None:
    token_file = secured.config_path.parent / "admin.token"
    new = "rotated-token-0123456789abcdef"
    token_file.write_text(new + "\n")
    assert await secured.bal.reloader.reload() is None
    old_auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await secured.call("POST", "/api/v1/servers/TS01/state", {"state": "drain"}, headers=old_auth))[0] == 401
    lower = {"Authorization": f"bearer {new}"}  # the scheme is case-insensitive (RFC 7235)
    assert (await secured.call("POST", "/api/v1/servers/TS01/state", {"state": "drain"}, headers=lower))[0] == 200
    token_file.chmod(0o644)  # a reload must not start trusting a file others can read
    error = await secured.bal.reloader.reload()
    assert error is not None and "accessible by group or others" in error
    assert (await secured.call("POST", "/api/v1/servers/TS01/state", {"state": "ready"}, headers=lower))[0] == 200


async def test_a_changed_admin_listen_address_needs_a_restart(secured: Secured) -> None:
    text = secured.config_path.read_text().replace('[admin]\nlisten = "127.0.0.1:0"', '[admin]\nlisten = "127.0.0.1:1"')
    secured.config_path.write_text(text)
    error = await secured.bal.reloader.reload()
    assert error is not None and "admin.listen" in error and "restart" in error


async def test_a_rebound_host_name_cannot_read_the_loopback_api(secured: Secured) -> None:
    """DNS rebinding: a page at evil.example re-points its name at 127.0.0.1 and reads the API."""
    for host in ("evil.example", f"evil.example:{secured.bal.admin.port}", "127.0.0.1.evil.example"):
        status, body = await secured.call("GET", "/api/v1/sessions", headers={"Host": host})
        assert status == 421 and "DNS rebinding" in body["error"], (host, body)
    for host in ("localhost", f"127.0.0.1:{secured.bal.admin.port}", f"[::1]:{secured.bal.admin.port}", "LOCALHOST"):
        assert (await secured.call("GET", "/api/v1/sessions", headers={"Host": host}))[0] == 200, host
    # a reverse proxy's name, once listed, is accepted (and applies on reload)
    text = secured.config_path.read_text().replace("[admin]\n", '[admin]\nallowed_hosts = ["rdpb.corp.example"]\n', 1)
    secured.config_path.write_text(text)
    assert await secured.bal.reloader.reload() is None
    assert (await secured.call("GET", "/api/v1/sessions", headers={"Host": "rdpb.corp.example"}))[0] == 200


async def test_a_wildcard_admin_listener_still_checks_hosts_on_loopback(tmp_path: Path) -> None:
    """`listen = "0.0.0.0:PORT"` is reachable on 127.0.0.1 from a local browser too: a request
    arriving on a loopback address must name a loopback host (it was not checked at all)."""
    farm = await start_farm("TS01")
    text = farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db").replace(
        '[admin]\nlisten = "127.0.0.1:0"', '[admin]\nlisten = "0.0.0.0:0"')
    bal = Balancer(parse_config(text))
    await bal.start()
    try:
        port = bal.admin.port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/api/v1/sessions", headers={"Host": "evil.example"}) as resp:
                assert resp.status == 421
            async with http.get(f"http://127.0.0.1:{port}/api/v1/sessions") as resp:
                assert resp.status == 200
    finally:
        await bal.stop()
        await farm[0].stop()


def test_the_host_check_follows_the_address_a_request_came_in_on() -> None:
    """Arrived elsewhere than loopback (a wildcard listener's real interface): no check unless
    allowed_hosts names some; on loopback: the loopback names and allowed_hosts."""
    auth = Auth(None, False, LOOPBACK_HOSTS | {"0.0.0.0"}, frozenset())
    assert auth.allowed("10.1.2.3") is None
    assert auth.allowed("127.0.0.1") == LOOPBACK_HOSTS | {"0.0.0.0"}
    assert auth.allowed("::ffff:127.0.0.1") == LOOPBACK_HOSTS | {"0.0.0.0"}
    assert auth.allowed("::1") == LOOPBACK_HOSTS | {"0.0.0.0"}
    named = Auth(None, False, LOOPBACK_HOSTS, frozenset({"rdpb.corp"}))
    assert named.allowed("10.1.2.3") == {"rdpb.corp"}
    assert "rdpb.corp" in (named.allowed("127.0.0.1") or ())
