"""The admin API over real HTTP, against a balancer relaying real (fake-RDP) sessions."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rdpbalancer.admin.server import AdminError, read_token
from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from tests.support.balancer import farm_config
from tests.support.fakes import FakeRdpServer, rdp_connect, start_farm, was_cut, where

TOKEN = "s3cret-token-for-tests-0123456789"


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, bal: Balancer, farm: list[FakeRdpServer]) -> None:
        self.http, self.base, self.bal, self.farm = http, base, bal, farm
        self.port = bal.addresses[0][1]

    async def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                   raw: bytes | io.BytesIO | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base + path, json=body, data=raw, headers=headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    farm = await start_farm("TS01", "TS02")
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    extra = f'token_file = "{token_file}"\nunix_socket = "{tmp_path / "admin.sock"}"\n'
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "s.db").replace(
        '[admin]\nlisten = "127.0.0.1:0"\n', '[admin]\nlisten = "127.0.0.1:0"\n' + extra)
    path = tmp_path / "c.toml"
    path.write_text(text)
    bal = Balancer(parse_config(text, str(path)))
    bal.reloader.status.path = str(path)
    await bal.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(http, f"http://127.0.0.1:{bal.admin.port}", bal, farm)
    finally:
        await bal.stop()
        for s in farm:
            await s.stop()


MUTATIONS = [
    ("POST", "/api/v1/servers/TS01/state", {"state": "drain"}),
    ("POST", "/api/v1/servers/TS01/weight", {"weight": 3}),
    ("PUT", "/api/v1/sticky/alice", {"server": "TS01"}),
    ("DELETE", "/api/v1/sticky/alice", None),
    ("POST", "/api/v1/sticky/flush", {"server": "TS01"}),
    ("POST", "/api/v1/sticky/import", {"entries": []}),
    ("DELETE", "/api/v1/sessions/nope", None),
    ("POST", "/api/v1/reload", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
async def test_mutations_need_the_token(api: Api, method: str, path: str, body: Any) -> None:
    before = await api.call("GET", "/api/v1/servers")
    for token in (None, "wrong", TOKEN[:-1]):
        status, reply = await api.call(method, path, body, token=token)
        assert status == 401 and "token" in reply["error"]
    assert await api.call("GET", "/api/v1/servers") == before  # nothing changed


async def test_servers_state_and_weight(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/servers")
    assert status == 200 and [s["name"] for s in body["servers"]] == ["TS01", "TS02"]
    assert {"health", "admin_state", "active_sessions", "homed_users", "last_error"} <= set(body["servers"][0])
    status, s = await api.call("POST", "/api/v1/servers/TS01/state", {"state": "drain"})
    assert status == 200 and s["admin_state"] == "drain" and s["admin_state_override"] == "drain"
    assert {await where(api.port, f"u{i}") for i in range(4)} == {"TS02"}
    status, s = await api.call("POST", "/api/v1/servers/TS01/weight", {"weight": 7})
    assert status == 200 and s["pools"] == [{"pool": "default", "weight": 7, "effective_weight": 7,
                                                 "max_sessions": None, "backup": False}]
    assert (await api.call("POST", "/api/v1/servers/TS01/state", {"state": "asleep"}))[0] == 400
    assert (await api.call("POST", "/api/v1/servers/TS01/weight", {"weight": 999}))[0] == 400
    assert (await api.call("POST", "/api/v1/servers/TS01/weight", {"weight": "5"}))[0] == 400
    status, err = await api.call("POST", "/api/v1/servers/NOPE/state", {"state": "drain"})
    assert status == 404 and "NOPE" in err["error"]
    status, err = await api.call("POST", "/api/v1/servers/TS01/state", raw=b"{not json")
    assert status == 400 and "JSON" in err["error"]


async def test_sticky_crud_export_import_flush(api: Api) -> None:
    home = await where(api.port, "alice")
    status, e = await api.call("GET", "/api/v1/sticky/ALICE")
    assert status == 200 and e["server"] == home and e["pool"] == "default"
    other = "TS02" if home == "TS01" else "TS01"
    status, e = await api.call("PUT", "/api/v1/sticky/alice", {"server": other})
    assert status == 200 and e["server"] == other
    assert await where(api.port, "alice") == other  # the override routes
    assert (await api.call("PUT", "/api/v1/sticky/alice", {"server": "NOPE"}))[0] == 400
    assert (await api.call("PUT", "/api/v1/sticky/alice", {"server": "TS01", "pool": "nope"}))[0] == 400
    status, page = await api.call("GET", "/api/v1/sticky?limit=10")
    assert status == 200 and page["total"] == 1
    assert (await api.call("GET", "/api/v1/sticky?limit=abc"))[0] == 400
    status, result = await api.call("POST", "/api/v1/sticky/import", {"entries": [
        {"user": "bob", "server": "TS01"}, {"user": "carol", "server": "TS02"}, {"user": "x", "server": "NOPE"}]})
    assert status == 207 and result["imported"] == 2 and "NOPE" in result["errors"][0]
    status, page = await api.call("GET", "/api/v1/sticky?server=TS01")
    assert {e["user"] for e in page["entries"]} >= {"bob"}
    status, result = await api.call("POST", "/api/v1/sticky/flush", {"server": "TS01"})
    assert status == 200 and result["deleted"] >= 1
    assert (await api.call("GET", "/api/v1/sticky/bob"))[0] == 404
    assert (await api.call("DELETE", "/api/v1/sticky/carol"))[0] == 200
    assert (await api.call("DELETE", "/api/v1/sticky/carol"))[0] == 404
    # durable: the file has what the API said
    rows = api.bal.store.read_only()
    assert {(r.key, r.server) for r in rows} == {("alice", other)}


async def test_sessions_list_and_close(api: Api) -> None:
    client = await rdp_connect(api.port, "alice")
    status, body = await api.call("GET", "/api/v1/sessions")
    live = [s for s in body["sessions"] if s["user"] == "alice"]
    assert status == 200 and len(live) == 1 and live[0]["server"] == client.server and live[0]["bytes_up"] > 0
    status, _ = await api.call("DELETE", f"/api/v1/sessions/{live[0]['id']}")
    assert status == 200
    assert await was_cut(client.reader)
    await client.close()


async def test_reload_ok_and_refused(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/reload")
    assert status == 200 and body["reloaded"]
    path = Path(api.bal.reloader.status.path)
    good = path.read_text()
    path.write_text(good.replace('name = "default"', 'name = "default"\nbogus = 1'))
    status, err = await api.call("POST", "/api/v1/reload")
    assert status == 422 and "bogus: unknown key" in err["error"]
    status, cfg = await api.call("GET", "/api/v1/config")
    assert cfg["reloads_failed"] == 1 and "bogus" in cfg["last_reload_error"]
    assert await where(api.port, "dave") in {"TS01", "TS02"}  # the old config keeps serving


async def test_read_endpoints(api: Api) -> None:
    await where(api.port, "alice")
    for path in ("/api/v1/routes", "/api/v1/groups", "/api/v1/config", "/api/v1/decisions", "/api/v1/events",
                 "/api/v1/pools", "/api/v1/explain?user=alice", "/api/v1/openapi.json"):
        status, body = await api.call("GET", path, token=None)
        assert status == 200, (path, body)
    status, body = await api.call("GET", "/api/v1/decisions", token=None)
    assert body["decisions"][0]["user"] == "alice" and body["decisions"][0]["reason"] == "new"
    status, body = await api.call("GET", "/api/v1/explain?user=alice", token=None)
    assert body["decision"]["reason"] == "sticky-hit"
    status, spec = await api.call("GET", "/api/v1/openapi.json", token=None)
    assert spec["openapi"].startswith("3.") and "/api/v1/servers/{name}/state" in spec["paths"]
    assert (await api.call("GET", "/api/v1/nothing", token=None))[0] == 404
    status, health = await api.call("GET", "/healthz", token=None)
    assert status == 200 and health["status"] == "ok"
    status, page = await api.call("GET", "/", token=None)
    assert status == 200 and "<html" in page


async def test_oversized_body_is_refused(api: Api) -> None:
    status, err = await api.call("POST", "/api/v1/sticky/import", raw=io.BytesIO(b"[" + b"0," * 800_000 + b"0]"))
    assert status == 413 and "larger than" in err["error"]


async def test_unix_socket_is_private_and_answers(api: Api, tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    connector = aiohttp.UnixConnector(path=str(sock))
    async with aiohttp.ClientSession(connector=connector) as http, http.get("http://localhost/api/v1/servers") as resp:
        assert resp.status == 200


async def test_metrics_follow_real_traffic(api: Api) -> None:
    clients = [await rdp_connect(api.port, f"user{i}") for i in range(3)]
    again = await rdp_connect(api.port, "user0")
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await reader.read()
    writer.close()
    status, text = await api.call("GET", "/metrics", token=None)
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert all(name.startswith("rdpbalancer_") for name, _ in samples if not name.startswith(("python_", "process_")))
    assert samples[("rdpbalancer_connections_total", (("result", "new"),))] == 3
    assert samples[("rdpbalancer_connections_total", (("result", "sticky-hit"),))] == 1
    assert samples[("rdpbalancer_malformed_requests_total", (("kind", "not-tpkt"),))] == 1
    assert samples[("rdpbalancer_sticky_entries", ())] == 3
    assert samples[("rdpbalancer_sticky_lookups_total", (("result", "hit"),))] == 1
    active = sum(v for (n, _), v in samples.items() if n == "rdpbalancer_sessions_active")
    assert active == 4
    assert samples[("rdpbalancer_handshake_duration_seconds_count", ())] == 4  # the HTTP request is no CR
    assert samples[("rdpbalancer_backend_connect_duration_seconds_count", ())] == 4
    assert samples[("rdpbalancer_bytes_total", (("direction", "client_to_server"),))] > 0
    assert samples[("rdpbalancer_server_up", (("server", "TS01"),))] == 1
    assert samples[("rdpbalancer_server_admin_state", (("server", "TS01"), ("state", "ready")))] == 1
    assert samples[("rdpbalancer_config_reloads_total", (("result", "success"),))] == 0
    for c in (*clients, again):
        await c.close()


def test_token_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(AdminError, match="chmod 600"):
        read_token(path)
    path.chmod(0o600)
    assert read_token(path) == TOKEN
    path.write_text("short")
    with pytest.raises(AdminError, match="at least 16"):
        read_token(path)


async def test_without_token_file_the_api_is_read_only(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    bal = Balancer(parse_config(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db")))
    await bal.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{bal.admin.port}/api/v1/servers/TS01/state"
            async with http.post(url, json={"state": "drain"}, headers={"Authorization": "Bearer x"}) as resp:
                assert resp.status == 403 and "read-only" in (await resp.json())["error"]
    finally:
        await bal.stop()
        await farm[0].stop()


# Input that used to crash a handler (500 and a traceback): each must be a 4xx that names it.
BAD_INPUT = [
    ("GET", "/api/v1/sticky?limit=%C2%B2", None, None),  # "²".isdigit() is True, int("²") fails
    ("GET", "/api/v1/sticky?offset=%E2%91%A0", None, None),  # "①"
    ("GET", "/api/v1/sticky?limit=-1", None, None),
    ("GET", "/api/v1/sticky?limit=" + "9" * 5000, None, None),
    ("POST", "/api/v1/sticky/import", None, b'{"entries": [{"user": "\\ud800", "server": "TS01"}]}'),
    ("PUT", "/api/v1/sticky/alice", None, b'{"server": "\\ud800"}'),
    ("POST", "/api/v1/servers/TS01/weight", None, b"[" * 200_000 + b"]" * 200_000),
    ("POST", "/api/v1/sticky/import", None, b'{"entries": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
    ("POST", "/api/v1/servers/TS01/weight", None, b'{"weight": ' + b"7" * 5000 + b"}"),
    ("POST", "/api/v1/servers/TS01/weight", None, b'{"weight": 1e400}'),
    ("POST", "/api/v1/servers/TS01/state", None, b'{"state": "drain", "extra": 1}'),
    ("POST", "/api/v1/servers/TS01/state", None, b"\xff\xfe not utf-8"),
    ("GET", "/api/v1/explain?source=banana", None, None),
    ("PUT", "/api/v1/sticky/a:b", {"server": "TS01"}, None),  # not an account name (identity rule 4)
    ("PUT", "/api/v1/sticky/al%00ice", {"server": "TS01"}, None),
    ("GET", "/api/v1/sticky/ip:banana", None, None),
]


@pytest.mark.parametrize(("method", "path", "body", "raw"), BAD_INPUT,
                         ids=[f"{m} {p[:40]} {(r or b'')[:20]!r}" for m, p, _b, r in BAD_INPUT])
async def test_bad_input_is_a_4xx_that_names_it(api: Api, method: str, path: str, body: Any, raw: bytes | None,
                                                caplog: pytest.LogCaptureFixture) -> None:
    status, answer = await api.call(method, path, body=body, raw=raw)
    assert 400 <= status < 500, (status, answer)
    assert isinstance(answer, dict) and answer["error"], answer
    assert "Traceback" not in caplog.text and "failed" not in caplog.text


async def test_explain_predicts_the_next_real_decision_and_changes_nothing(api: Api) -> None:
    """With tied servers, GET /api/v1/explain used to advance the tie-break: it predicted the
    wrong server every time, and any reader could steer where the next new user went."""
    for i in range(6):
        user = f"tied{i}"
        answers = [(await api.call("GET", f"/api/v1/explain?user={user}", token=None))[1] for _ in range(3)]
        predicted = {a["decision"]["servers"][0] for a in answers}
        assert len(predicted) == 1, answers
        assert await where(api.port, user) == predicted.pop()
