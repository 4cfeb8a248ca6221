"""Read a runtime-API ``show table NAME`` dump, to carry HAProxy's stickiness over.

The format (HAProxy management.txt, "show table"), one header line, then one line per entry::

    # table: BK_RDP, type: string, size:10240, used:3
    0x5582f161a330: key=alice use=0 exp=28798936 server_id=1 server_key=TS01

``exp`` is the time left in milliseconds, ``server_id`` the server's id (its position in the
backend, from 1, unless the server line sets ``id``), ``server_key`` its name (HAProxy 2.6 and
later; older dumps have only the id: see :func:`resolve_server_names`). Other fields (``shard``,
stored counters) are ignored.

Lines that are neither a header, an entry nor blank are not raised: they are returned in
``ShowTable.skipped`` with their line number, and the caller decides whether a partial import is
acceptable (a dump piped through socat may end with an error message or a cut-off line).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from rdpbalancer.migrate.haproxy_cfg import MigrationError

# "0x5582f161a330: key=alice use=0 rest": the key is raw (a string key may contain blanks), so it
# ends at the first " use=", which HAProxy always prints next.
_ENTRY = re.compile(r"0x[0-9a-fA-F]+:\s+key=(?P<key>.*?)\s+use=(?P<use>[0-9]+)(?P<rest>(?:\s.*)?)")
_HEADER = re.compile(r"#\s*table:\s*(?P<fields>.*)")
_PROMPT = "> "  # the runtime API's interactive prompt, when the dump was copied from a session


@dataclass(frozen=True, slots=True)
class ShowTableEntry:
    key: str
    server_name: str | None
    server_id: int | None
    expires_in_ms: int | None
    use: int


@dataclass(frozen=True, slots=True)
class SkippedLine:
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text!r}"


@dataclass(frozen=True, slots=True)
class ShowTable:
    """One table: ``table`` is None when the dump had no header line."""

    table: str | None
    entries: list[ShowTableEntry]
    skipped: list[SkippedLine]
    key_type: str | None = None
    size: int | None = None
    used: int | None = None


def parse_show_table(text: str) -> ShowTable:
    """The one table in ``text``; MigrationError if it holds several (see parse_show_tables)."""
    tables = parse_show_tables(text)
    if len(tables) > 1:
        names = ", ".join(str(table.table) for table in tables)
        raise MigrationError(None, f"the dump holds {len(tables)} tables ({names}); expected one")
    return tables[0] if tables else ShowTable(None, [], [])


def parse_show_tables(text: str) -> list[ShowTable]:
    """Every table in ``text``, in order (``show table A`` and ``show table B`` output pasted together)."""
    tables: list[ShowTable] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().removeprefix(_PROMPT).strip()
        if not line:
            continue
        header = _HEADER.fullmatch(line)
        if header is not None:
            tables.append(_header(header["fields"]))
            continue
        if not tables:
            tables.append(ShowTable(None, [], []))
        _read_line(tables[-1], number, line)
    return tables


def _header(fields: str) -> ShowTable:
    """``BK_RDP, type: string, size:10240, used:3``."""
    name, _, rest = fields.partition(",")
    values = dict(_pair(part) for part in rest.split(",") if ":" in part)
    return ShowTable(name.strip(), [], [], values.get("type"), _number(values.get("size")),
                     _number(values.get("used")))


def _pair(part: str) -> tuple[str, str]:
    name, _, value = part.partition(":")
    return name.strip(), value.strip()


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


def _read_line(table: ShowTable, number: int, line: str) -> None:
    match = _ENTRY.fullmatch(line)
    if match is None:
        table.skipped.append(SkippedLine(number, line, "not a table entry"))
        return
    try:
        table.entries.append(_entry(match))
    except ValueError as error:
        table.skipped.append(SkippedLine(number, line, str(error)))


def _entry(match: re.Match[str]) -> ShowTableEntry:
    fields = dict(_field(token) for token in match["rest"].split() if "=" in token)
    server_name = fields.get("server_key") or fields.get("server_name") or None
    return ShowTableEntry(match["key"], server_name, _int_field(fields, "server_id"), _int_field(fields, "exp"),
                          int(match["use"]))


def _field(token: str) -> tuple[str, str]:
    name, _, value = token.partition("=")
    return name, value


def _int_field(fields: dict[str, str], name: str) -> int | None:
    if name not in fields:
        return None
    value = fields[name]
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{name}={value!r} is not a number")
    return int(value)


def resolve_server_names(entries: list[ShowTableEntry], backend_servers: list[str]) -> list[ShowTableEntry]:
    """Fill ``server_name`` from ``server_id`` for dumps without ``server_key``.

    ``backend_servers`` are the backend's server names in file order: HAProxy numbers servers from 1
    in that order (a server line with ``id N`` breaks this; pass the names in id order then). An
    entry that already has a name, or whose id is out of range, is returned unchanged.
    """
    return [_resolved(entry, backend_servers) for entry in entries]


def _resolved(entry: ShowTableEntry, backend_servers: list[str]) -> ShowTableEntry:
    server_id = entry.server_id
    if entry.server_name is None and server_id is not None and 1 <= server_id <= len(backend_servers):
        return dataclasses.replace(entry, server_name=backend_servers[server_id - 1])
    return entry
