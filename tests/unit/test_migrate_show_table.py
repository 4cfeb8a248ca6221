"""`show table` dumps from HAProxy's runtime API: the 2.6 fixture, older dumps, odd and bad lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdpbalancer.migrate import (
    MigrationError,
    ShowTableEntry,
    parse_show_table,
    parse_show_tables,
    resolve_server_names,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "haproxy"
BACKEND = ["TS01", "TS02", "TS03", "TS04", "TS05", "TS06", "TS07", "TS08"]


def test_the_haproxy_2_6_fixture() -> None:
    table = parse_show_table((DATA / "show-table-BK_RDP.txt").read_text())
    assert (table.table, table.key_type, table.size, table.used) == ("BK_RDP", "string", 10240, 3)
    assert table.entries == [
        ShowTableEntry("alice", "TS01", 1, 28798936, 0),
        ShowTableEntry("bob", "TS02", 2, 28798104, 1),
        ShowTableEntry("carol", "TS08", 8, 28799134, 0),
    ]
    assert table.skipped == []


def test_an_older_dump_without_server_key_resolves_by_position() -> None:
    text = ("# table: BK_RDP, type: string, size:10240, used:2\n"
            "0x55d0c8a3b2c0: key=alice use=0 exp=100 server_id=1\n"
            "0x55d0c8a3b3f0: key=dave use=0 exp=200 server_id=12\n")
    table = parse_show_table(text)
    assert [e.server_name for e in table.entries] == [None, None]
    resolved = resolve_server_names(table.entries, BACKEND)
    assert [(e.key, e.server_name) for e in resolved] == [("alice", "TS01"), ("dave", None)]  # 12: out of range


def test_a_name_from_the_dump_wins_over_the_position() -> None:
    [entry] = parse_show_table("0x1: key=bob use=0 exp=5 server_id=2 server_key=TS09\n").entries
    assert resolve_server_names([entry], BACKEND)[0].server_name == "TS09"


def test_extra_fields_blank_lines_and_prompts_are_tolerated() -> None:
    text = ("\n> # table: BK_RDP, type: string, size:10240, used:2\n\n"
            "0x7f2e: key=alice use=0 exp=28798936 shard=0 server_id=1 server_key=TS01 gpc0=4 conn_rate(30000)=1\n"
            "   \n"
            "0x7f2f: key=john doe use=2 exp=10 server_id=3\n")
    table = parse_show_table(text)
    assert [(e.key, e.server_id, e.use) for e in table.entries] == [("alice", 1, 0), ("john doe", 3, 2)]
    assert table.skipped == []


def test_entries_without_expiry_or_server() -> None:
    [entry] = parse_show_table("0x1: key=10.0.0.1 use=0 gpc0=1\n").entries
    assert (entry.expires_in_ms, entry.server_id, entry.server_name) == (None, None, None)


def test_bad_lines_are_reported_with_their_number() -> None:
    text = ("# table: BK_RDP, type: string, size:10240, used:3\n"
            "0x1: key=alice use=0 exp=1 server_id=1 server_key=TS01\n"
            "Unknown command. Please enter one of the following commands only :\n"
            "0x2: key=bob use=0 exp=soon server_id=2\n"
            "0x3: key=carol us\n")
    table = parse_show_table(text)
    assert [e.key for e in table.entries] == ["alice"]
    assert [(s.line, s.reason) for s in table.skipped] == [
        (3, "not a table entry"), (4, "exp='soon' is not a number"), (5, "not a table entry")]
    assert str(table.skipped[1]) == "line 4: exp='soon' is not a number: '0x2: key=bob use=0 exp=soon server_id=2'"


def test_no_header_and_empty_dumps() -> None:
    assert parse_show_table("0x1: key=a use=0\n").table is None
    empty = parse_show_table("")
    assert (empty.table, empty.entries, empty.skipped) == (None, [], [])


def test_several_tables() -> None:
    text = "# table: A, type: string, size:10, used:1\n0x1: key=a use=0\n# table: B, type: ip, size:10, used:0\n"
    assert [t.table for t in parse_show_tables(text)] == ["A", "B"]
    with pytest.raises(MigrationError, match="holds 2 tables"):
        parse_show_table(text)
