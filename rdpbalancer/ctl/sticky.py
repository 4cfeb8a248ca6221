"""`rdpbalancer ctl sticky export | import | import-haproxy`: the sticky table in and out, in bulk."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rdpbalancer.ctl.client import EXIT_USAGE, ApiClient, CtlError
from rdpbalancer.ctl.table import safe

EXPORT_PAGE = 1000  # the API's largest page (admin.api.MAX_PAGE)
# The table is kept in least-recently-used order: a user who connects during an export moves to
# the end, shifting the entries after them back by one. Pages overlap by this much (duplicates
# are dropped), so an entry is missed only if more users than this connect between two pages.
EXPORT_OVERLAP = 100
MAX_EXPORT_PAGES = 20_000  # a bound on the paging loop: ~18 million entries, far past max_entries
IMPORT_CHUNK = 500  # entries per request: ~50 KB, well under the API's 1 MiB body limit
# each imported entry is a durable commit (an fsync with sync = "full"): a chunk may take seconds
IMPORT_CHUNK_TIMEOUT_S = 120.0
_ENTRY_INDEX = re.compile(r"entries\[(\d+)\]")


def export_entries(client: ApiClient) -> list[dict[str, Any]]:
    """Every entry, through the paged GET /api/v1/sticky, each user once."""
    entries: dict[str, dict[str, Any]] = {}
    offset = 0
    for _ in range(MAX_EXPORT_PAGES):
        page = client.get("/api/v1/sticky", {"limit": str(EXPORT_PAGE), "offset": str(offset)})
        rows = page["entries"]
        entries.update((e["user"], e) for e in rows)
        if len(rows) < EXPORT_PAGE or offset + len(rows) >= page["total"]:
            break
        offset += len(rows) - EXPORT_OVERLAP
    return list(entries.values())


@dataclass(slots=True)
class ImportResult:
    imported: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"imported": self.imported, "errors": self.errors}


def import_entries(client: ApiClient, entries: list[dict[str, Any]], chunk: int = IMPORT_CHUNK) -> ImportResult:
    """POST the entries in chunks; errors name the entry's index in `entries` and its user."""
    result = ImportResult()
    for start in range(0, len(entries), chunk):
        part = entries[start: start + chunk]
        try:
            answer = client.call("POST", "/api/v1/sticky/import", {"entries": part},
                                 timeout_s=max(client.timeout_s, IMPORT_CHUNK_TIMEOUT_S))
        except CtlError as exc:
            raise CtlError(f"{exc}\n{result.imported} of {len(entries)} entries were imported before this failure; "
                           "importing the file again is safe (entries are set, not added)", exc.exit_code) from None
        result.imported += answer["imported"]
        result.errors += [_renumbered(error, start, entries) for error in answer["errors"]]
    return result


def _renumbered(error: str, start: int, entries: list[dict[str, Any]]) -> str:
    """`entries[3]: ...` of a chunk -> `entries[503] (user 'x'): ...` of the whole file."""
    match = _ENTRY_INDEX.match(error)
    if match is None:
        return error
    index = start + int(match[1])
    entry = entries[index] if 0 <= index < len(entries) else None
    user = entry.get("user") if isinstance(entry, dict) else None
    who = f" (user {safe(user)})" if isinstance(user, str) else ""
    return f"entries[{index}]{who}{error[match.end():]}"


def parse_export(text: str, source: str) -> list[dict[str, Any]]:
    """The entries of an export file: {"entries": [{"user": ..., "server": ..., "pool": ...}, ...]}.

    Only user, server and pool are sent back: created / last_used are the balancer's to set.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CtlError(f"{source}: not JSON: {exc}", EXIT_USAGE) from None
    entries = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise CtlError(f'{source}: expected {{"entries": [{{"user": ..., "server": ...}}, ...]}}', EXIT_USAGE)
    return [_importable(e) for e in entries]


def _importable(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry  # the API names it in its errors, with its index
    return {k: entry[k] for k in ("user", "server", "pool") if entry.get(k) is not None}


@dataclass(frozen=True, slots=True)
class HaproxyDump:
    entries: list[dict[str, Any]]  # ready for import_entries
    skipped: list[str]  # lines and entries that cannot be imported, and why


def parse_haproxy_dump(text: str, servers: list[str] | None, pool: str | None) -> HaproxyDump:
    """Import entries from a `show table` dump (HAProxy runtime API).

    `servers` are the backend's server names in id order, for dumps without `server_key` (older
    HAProxy versions print only `server_id`).
    """
    # imported here: the migration package pulls in the config schema (pydantic), which ctl's
    # other commands never need
    from rdpbalancer.migrate.haproxy_cfg import MigrationError  # noqa: PLC0415
    from rdpbalancer.migrate.show_table import parse_show_table, resolve_server_names  # noqa: PLC0415

    try:
        table = parse_show_table(text)
    except MigrationError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    found = resolve_server_names(table.entries, servers) if servers else table.entries
    skipped = [str(line) for line in table.skipped]
    entries = []
    for entry in found:
        if entry.server_name is None:
            skipped.append(f"key={safe(entry.key)} server_id={entry.server_id}: {_unnamed(servers)}")
            continue
        entries.append({"user": entry.key, "server": entry.server_name} | ({"pool": pool} if pool else {}))
    return HaproxyDump(entries, skipped)


def _unnamed(servers: list[str] | None) -> str:
    if servers is None:
        return "no server name in the dump; pass --servers NAME1,NAME2,... (the backend's servers, in id order)"
    return f"no server name in the dump, and --servers names only {len(servers)} server(s)"
