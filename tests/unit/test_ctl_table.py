"""The text output of `rdpbalancer ctl`: aligned tables, terminal-safe values, compact units."""

from __future__ import annotations

import pytest

from rdpbalancer.ctl import views
from rdpbalancer.ctl.table import (
    display_width,
    format_age,
    format_bytes,
    format_pairs,
    format_table,
    safe,
)


def test_columns_are_aligned_and_lines_have_no_trailing_blanks() -> None:
    text = format_table(["NAME", "SESSIONS", "LAST ERROR"], [["TS01", 3, None], ["TS1000", 12, "refused"]],
                        right=[1])
    assert text.splitlines() == [
        "NAME    SESSIONS  LAST ERROR",
        "TS01           3  -",
        "TS1000        12  refused",
    ]


def test_a_table_without_rows_is_its_header() -> None:
    assert format_table(["A", "B"], []) == "A  B"


def test_a_row_of_the_wrong_length_is_a_bug() -> None:
    with pytest.raises(ValueError, match="2 cells, the table 3 columns"):
        format_table(["A", "B", "C"], [["x", "y"]])


def test_wide_characters_take_two_columns() -> None:
    text = format_table(["USER", "SERVER"], [["李小龙", "TS01"], ["bob", "TS02"]])
    first, second = text.splitlines()[1:]
    assert first.index("TS01") + 3 == second.index("TS02")  # 3 wide characters = 6 columns: aligned on screen
    assert display_width("李小龙") == 6
    assert display_width("jose\u0301") == 4  # a combining accent takes no column
    assert display_width("josé") == 4


@pytest.mark.parametrize(("value", "shown"), [
    ("alice", "alice"),
    ("josé", "josé"),
    ("CORP\\bob", "CORP\\bob"),
    ("evil\x1b[2Jname", "evil\\x1b[2Jname"),  # an escape sequence cannot repaint the terminal
    ("rtl\u202eevil", "rtl\\u202eevil"),  # nor a bidi override reorder the line
    ("two\nlines\r", "two\\nlines\\r"),
    ("nul\x00", "nul\\x00"),
    ("nbsp\u00a0", "nbsp\\xa0"),
    (None, "-"),
    (42, "42"),
])
def test_values_are_made_safe_for_a_terminal(value: object, shown: str) -> None:
    assert safe(value) == shown


def test_cells_are_made_safe() -> None:
    assert format_table(["USER"], [["a\x1bb"]]).splitlines()[1] == "a\\x1bb"


def test_multi_line_messages_may_keep_their_line_breaks() -> None:
    assert safe("bad.toml: x\n\tbad.toml: y\x1b", keep_newlines=True) == "bad.toml: x\n\tbad.toml: y\\x1b"


def test_pairs_are_aligned() -> None:
    assert format_pairs([("user", "alice"), ("last used", None)]) == "user:      alice\nlast used: -"


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (-3, "0s"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (185, "3m05s"), (3600, "1h00m"),
    (7620, "2h07m"), (86400 * 4 + 3 * 3600 + 59, "4d03h"),
])
def test_ages(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**2, "5.0 MiB"),
    (3 * 1024**4, "3.0 TiB"), (2048 * 1024**4, "2048.0 TiB"),
])
def test_byte_counts(n: int | None, text: str) -> None:
    assert format_bytes(n) == text


def test_the_servers_view_marks_backups_and_ramps_and_reads_older_balancers() -> None:
    def server(name: str, pools: list[dict[str, object]], slowstart: object = None) -> dict[str, object]:
        return {"name": name, "pools": pools, "admin_state": "ready", "health": "up", "health_since": None,
                "active_sessions": 0, "homed_users": 0, "connections": 0, "last_error": None,
                **({"slowstart": slowstart} if slowstart is not None else {})}

    text = views.servers({"servers": [
        server("TS01", [{"pool": "default", "weight": 1}]),  # an older balancer: no backup, no slowstart
        server("TS02", [{"pool": "default", "weight": 2, "backup": False}],
               {"window_s": 60.0, "share": 0.25, "left_s": 45.0}),
        server("SPARE", [{"pool": "default", "weight": 1, "backup": True}],
               {"window_s": 60.0, "share": None, "left_s": None}),
    ]})
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "default(1)" in rows["TS01"] and " ready " in rows["TS01"]
    assert "default(2)" in rows["TS02"] and "ready ramping 25%" in rows["TS02"]
    assert "default(1 backup)" in rows["SPARE"] and "ramping" not in rows["SPARE"]
