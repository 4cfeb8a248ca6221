"""Text output of `rdpbalancer ctl`: aligned tables and terminal-safe strings. Standard library only.

User names come from the wire (the `mstshash` cookie) and may hold anything, including escape
sequences that would repaint an operator's terminal: every value is passed through :func:`safe`
before it is printed.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime

MISSING = "-"  # shown for a value the API does not have (null)
COLUMN_GAP = "  "


def safe(value: object, *, keep_newlines: bool = False) -> str:
    """`value` as text with every non-printable character escaped (`\\x1b`, `\\u202e`, `\\n`).

    Non-ASCII letters stay as they are (`josé`); control, format (bidi overrides) and separator
    characters do not. `keep_newlines` keeps line breaks and tabs, for multi-line error messages.
    """
    if value is None:
        return MISSING
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(_escape(ch, keep_newlines) for ch in text)


def _escape(ch: str, keep_newlines: bool) -> str:
    if ch.isprintable() or (keep_newlines and ch in "\n\t"):
        return ch
    return ch.encode("unicode_escape").decode("ascii")


def display_width(text: str) -> int:
    """Terminal columns `text` takes: wide (CJK) characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
                 right: Iterable[int] = ()) -> str:
    """An aligned text table: a header line, then one line per row; no trailing blanks.

    Cells are made safe with :func:`safe` (None shows as "-"); columns listed in `right` (by
    index) are right-aligned, for numbers.
    """
    cells = [[safe(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns: {row!r}")
    widths = [max([display_width(h), *(display_width(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    aligned = set(right)
    lines = [COLUMN_GAP.join(_pad(c, widths[i], i in aligned) for i, c in enumerate(line))
             for line in [list(headers), *cells]]
    return "\n".join(line.rstrip() for line in lines)


def format_pairs(pairs: Iterable[tuple[str, object]]) -> str:
    """`key: value` lines with the values aligned, for one object (a sticky entry, the config)."""
    items = [(k, safe(v, keep_newlines=True)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0) + 1
    return "\n".join(f"{k + ':':<{width}} {v}".rstrip() for k, v in items)


def format_age(seconds: float | None) -> str:
    """A compact duration: 42s, 3m05s, 2h07m, 4d03h."""
    if seconds is None:
        return MISSING
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age_since(timestamp: float | None, now: float | None = None) -> str:
    """How long ago a wall-clock `timestamp` was, as :func:`format_age` says it."""
    if timestamp is None:
        return MISSING
    return format_age((time.time() if now is None else now) - timestamp)


def format_time(timestamp: float | None) -> str:
    """A wall-clock timestamp in local time, to the second."""
    if timestamp is None:
        return MISSING
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_bytes(n: int | None) -> str:
    """1023 B, 1.0 KiB, 12.3 MiB, ..."""
    if n is None:
        return MISSING
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"
