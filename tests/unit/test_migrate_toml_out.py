"""The hand-written TOML: any string survives a round trip through tomllib, comments never break the file."""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from rdpbalancer.migrate.toml_out import Entry, Item, ItemsEntry, Table, comment_lines, key, render, string


@given(st.text())
def test_any_string_round_trips(text: str) -> None:
    assert tomllib.loads(f"value = {string(text)}\n")["value"] == text


@given(st.text(min_size=1))
def test_any_key_round_trips(name: str) -> None:
    assert tomllib.loads(f"{key(name)} = 1\n") == {name: 1}


@given(st.text())
def test_any_comment_stays_a_comment(text: str) -> None:
    lines = comment_lines(text, indent="  ")
    assert all(line.startswith("  #") for line in lines)
    assert tomllib.loads("\n".join(lines) + "\nx = 1\n") == {"x": 1}


def test_escapes() -> None:
    assert string('say "hi" C:\\dir\n\t\x7f') == '"say \\"hi\\" C:\\\\dir\\n\\t\\u007F"'
    assert key("Accounting") == "Accounting"
    assert key("sales.lst") == '"sales.lst"'


def test_render_tables_arrays_and_left_out_items() -> None:
    tables = [
        Table(None, comments=["header"]),
        Table("balancer", [Entry("listen", ["0.0.0.0:3389"], ["from bind"])]),
        Table("pool", [Entry("name", "p"), Entry("health", {"check": "none"}),
                       ItemsEntry("servers", [Item({"name": "a", "weight": 1}),
                                              Item({"name": "b", "weight": 0}, ["backup"], left_out=True)])],
              array=True),
        Table("admin", [Entry("listen", "127.0.0.1:9000")], ["suggestion"], left_out=True),
    ]
    text = render(tables)
    assert text == (
        "# header\n\n"
        "[balancer]\n# from bind\nlisten = [\"0.0.0.0:3389\"]\n\n"
        "[[pool]]\nname = \"p\"\nhealth = { check = \"none\" }\nservers = [\n"
        "  { name = \"a\", weight = 1 },\n  # backup\n  # { name = \"b\", weight = 0 },\n]\n\n"
        "# suggestion\n# [admin]\n# listen = \"127.0.0.1:9000\"\n"
    )
    assert tomllib.loads(text) == {"balancer": {"listen": ["0.0.0.0:3389"]},
                                   "pool": [{"name": "p", "health": {"check": "none"},
                                             "servers": [{"name": "a", "weight": 1}]}]}


def test_long_comments_wrap() -> None:
    lines = comment_lines("word " * 60, hanging="    ")
    assert len(lines) > 1
    assert all(len(line) <= 100 for line in lines)
    assert lines[1].startswith("#     word")
