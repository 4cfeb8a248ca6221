"""Write TOML by hand: tables with comments, in a fixed order, readable and deterministic.

Only what the translation needs: strings, integers, booleans, arrays of those, inline tables, and
arrays of inline tables one per line (``servers``), where an item may be left as a comment.
Every string goes through :func:`string` (TOML 1.0 basic strings, section 2.4 of the spec) and
every comment through :func:`comment_lines`, so input text cannot break the document.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Scalar = str | int | bool
Value = Scalar | Sequence[Scalar] | Mapping[str, Scalar]

COMMENT_WIDTH = 100  # characters per comment line, "# " included
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# TOML basic strings: escape the quote, the backslash and every control character (U+0000-U+001F, U+007F).
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # not allowed in comments (tab is)


@dataclass(frozen=True, slots=True)
class Item:
    """One inline table of a one-per-line array, with comments above it; ``left_out`` comments it out."""

    value: Mapping[str, Scalar]
    comments: Sequence[str] = ()
    left_out: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: Value
    comments: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class ItemsEntry:
    """``key = [`` then one inline table per line, then ``]``."""

    key: str
    items: Sequence[Item]
    comments: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Table:
    """``[name]``, ``[[name]]`` (``array``) or, with ``name=None``, comments only."""

    name: str | None
    entries: Sequence[Entry | ItemsEntry] = ()
    comments: Sequence[str] = ()
    array: bool = False
    left_out: bool = False  # a suggestion: written entirely as comments
    hanging: str = ""  # indentation of the continuation lines of long comments


def string(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _escape(m.group()), text) + '"'


def _escape(char: str) -> str:
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04X}"


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


def dotted_key(*parts: str) -> str:
    return ".".join(key(part) for part in parts)


def value(item: Value) -> str:
    """An inline value. bool before int: True is an int in Python."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, Mapping):
        return "{ " + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + " }" if item else "{}"
    return "[" + ", ".join(value(element) for element in item) + "]"


def comment_lines(text: str, *, indent: str = "", hanging: str = "") -> list[str]:
    """``text`` as ``# `` lines wrapped at COMMENT_WIDTH (continuations indented by ``hanging``);
    control characters are shown as \\xNN."""
    safe = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    width = COMMENT_WIDTH - len(indent) - 2
    lines = textwrap.wrap(safe, width=width, break_long_words=False, break_on_hyphens=False,
                          subsequent_indent=hanging) or [""]
    return [f"{indent}# {line}".rstrip() for line in lines]


def render(tables: Sequence[Table]) -> str:
    """The document: tables separated by one blank line, ending with a newline."""
    return "\n\n".join("\n".join(_table(table)) for table in tables) + "\n"


def _table(table: Table) -> list[str]:
    lines = [line for text in table.comments for line in comment_lines(text, hanging=table.hanging)]
    body: list[str] = []
    if table.name is not None:
        body.append(f"[[{table.name}]]" if table.array else f"[{table.name}]")
    for entry in table.entries:
        body += [line for text in entry.comments for line in comment_lines(text)]
        body += _entry(entry)
    if table.left_out:
        body = [f"# {line}" if not line.startswith("#") else line for line in body]
    return lines + body


def _entry(entry: Entry | ItemsEntry) -> list[str]:
    if isinstance(entry, ItemsEntry):
        return [f"{key(entry.key)} = [", *[line for item in entry.items for line in _item(item)], "]"]
    return [f"{key(entry.key)} = {value(entry.value)}"]


def _item(item: Item) -> list[str]:
    lines = [line for text in item.comments for line in comment_lines(text, indent="  ")]
    inline = f"{value(item.value)},"
    return [*lines, f"  # {inline}" if item.left_out else f"  {inline}"]
