"""`ctl sticky export | import | import-haproxy`, without a balancer: a fake API client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from rdpbalancer.ctl.client import EXIT_USAGE, CtlError, Target
from rdpbalancer.ctl.sticky import EXPORT_OVERLAP, export_entries, import_entries, parse_export, parse_haproxy_dump


class FakeTable:
    """GET /api/v1/sticky over a list kept in LRU order, and POST /api/v1/sticky/import."""

    def __init__(self, users: list[str], touch_between_pages: int = 0) -> None:
        self.rows = [{"user": u, "server": "TS01", "pool": "p"} for u in users]
        self.touch = touch_between_pages
        self.timeout_s = 1.0
        self.target = Target("http://fake", None)
        self.posts: list[list[Any]] = []

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        assert path == "/api/v1/sticky" and query is not None
        offset, limit = int(query["offset"]), int(query["limit"])
        page = {"total": len(self.rows), "offset": offset, "entries": self.rows[offset: offset + limit]}
        for _ in range(self.touch):  # users at the front connect: they move to the end
            self.rows.append(self.rows.pop(0))
        return page

    def call(self, method: str, path: str, body: Any = None, timeout_s: float | None = None) -> Any:
        assert (method, path) == ("POST", "/api/v1/sticky/import")
        self.posts.append(body["entries"])
        errors = [f"entries[{i}]: no server named {e['server']!r}" for i, e in enumerate(body["entries"])
                  if e.get("server") == "GONE"]
        return {"imported": len(body["entries"]) - len(errors), "errors": errors}


def test_export_pages_through_every_entry() -> None:
    users = [f"u{i}" for i in range(2500)]
    assert [e["user"] for e in export_entries(FakeTable(users))] == users  # type: ignore[arg-type]


def test_export_misses_nobody_while_users_connect() -> None:
    users = [f"u{i}" for i in range(3000)]
    table = FakeTable(users, touch_between_pages=EXPORT_OVERLAP)  # the most the overlap absorbs
    assert sorted(e["user"] for e in export_entries(table)) == sorted(users)  # type: ignore[arg-type]


def test_export_of_an_empty_table() -> None:
    assert export_entries(FakeTable([])) == []  # type: ignore[arg-type]


def test_import_goes_in_chunks_and_numbers_errors_across_them() -> None:
    entries = [{"user": f"u{i}", "server": "GONE" if i in (1, 7) else "TS01"} for i in range(8)]
    table = FakeTable([])
    result = import_entries(table, entries, chunk=3)  # type: ignore[arg-type]
    assert [len(p) for p in table.posts] == [3, 3, 2]
    assert result.imported == 6
    assert result.errors == ["entries[1] (user u1): no server named 'GONE'",
                             "entries[7] (user u7): no server named 'GONE'"]


def test_import_failure_says_how_far_it_got() -> None:
    class Failing(FakeTable):
        def call(self, method: str, path: str, body: Any = None, timeout_s: float | None = None) -> Any:
            if self.posts:
                raise CtlError("cannot reach http://fake: connection refused")
            return super().call(method, path, body, timeout_s)

    with pytest.raises(CtlError, match="2 of 4 entries were imported before this failure") as raised:
        import_entries(Failing([]), [{"user": f"u{i}", "server": "TS01"} for i in range(4)], chunk=2)  # type: ignore[arg-type]
    assert raised.value.exit_code == 1


def test_export_files_are_read_back_to_user_server_pool() -> None:
    text = '{"entries": [{"user": "a", "server": "S", "pool": "p", "created": 1, "last_used": 2}, ' \
           '{"user": "b", "server": "S", "pool": null}, 7]}'
    assert parse_export(text, "f.json") == [{"user": "a", "server": "S", "pool": "p"}, {"user": "b", "server": "S"}, 7]
    assert parse_export('[{"user": "a", "server": "S"}]', "f.json") == [{"user": "a", "server": "S"}]


@pytest.mark.parametrize("text", ["nope", '{"entries": 3}', '"x"'])
def test_bad_export_files_are_usage_errors(text: str) -> None:
    with pytest.raises(CtlError) as raised:
        parse_export(text, "f.json")
    assert raised.value.exit_code == EXIT_USAGE


def test_haproxy_dump_to_entries() -> None:
    dump = ("# table: BK_RDP, type: string, size:10240, used:3\n"
            "0x1: key=alice use=0 exp=10 server_id=1 server_key=TS01\n"
            "0x2: key=bob use=0 exp=10 server_id=2\n"
            "0x3: key=carol use=0 exp=10 server_id=5\n")
    parsed = parse_haproxy_dump(dump, ["TS01", "TS02"], "sales")
    assert parsed.entries == [{"user": "alice", "server": "TS01", "pool": "sales"},
                              {"user": "bob", "server": "TS02", "pool": "sales"}]
    assert parsed.skipped == ["key=carol server_id=5: no server name in the dump, and --servers names only 2 server(s)"]
    unnamed = parse_haproxy_dump(dump, None, None)
    assert unnamed.entries == [{"user": "alice", "server": "TS01"}] and len(unnamed.skipped) == 2


def test_a_dump_of_several_tables_is_refused() -> None:
    two = "# table: A, type: string, size:1, used:0\n# table: B, type: string, size:1, used:0\n"
    with pytest.raises(CtlError, match="2 tables") as raised:
        parse_haproxy_dump(two, None, None)
    assert raised.value.exit_code == EXIT_USAGE
