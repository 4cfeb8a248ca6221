"""Human-readable forms of the admin API's answers, for `rdpbalancer ctl` (`--json` prints them raw).

Each function takes the decoded JSON of one endpoint and returns the text to print.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rdpbalancer.ctl.table import (
    MISSING,
    age_since,
    format_bytes,
    format_pairs,
    format_table,
    format_time,
    safe,
)

NOTHING = "(none)"


def _table(headers: Sequence[str], rows: list[list[Any]], right: Sequence[int] = ()) -> str:
    text = format_table(headers, rows, right=right)
    return text if rows else f"{text}\n{NOTHING}"


def servers(data: dict[str, Any]) -> str:
    headers = ["NAME", "POOLS(weights)", "STATE", "HEALTH", "SINCE", "SESSIONS", "HOMED", "CONNS", "LAST ERROR"]
    rows = [[s["name"], _pools(s["pools"]), _state(s), s["health"], age_since(s.get("health_since")),
             s["active_sessions"], s["homed_users"], s["connections"], s.get("last_error")]
            for s in data["servers"]]
    return _table(headers, rows, right=(5, 6, 7))


def _state(server: dict[str, Any]) -> str:
    """The admin state, and the share of its weight while slow start ramps it up."""
    ramp = server.get("slowstart") or {}
    share = ramp.get("share")
    return str(server["admin_state"]) + (f" ramping {round(share * 100)}%" if share is not None else "")


def _pools(pools: list[dict[str, Any]]) -> str:
    return ",".join(f"{p['pool']}({p['weight']}{' backup' if p.get('backup') else ''})" for p in pools) or MISSING


def server_changed(server: dict[str, Any]) -> str:
    """After drain/ready/maint/weight: the server's state and weights as the balancer now has them."""
    return f"{safe(server['name'])}: state {server['admin_state']}, health {server['health']}, " \
           f"weights {_pools(server['pools'])}"


def sessions(data: dict[str, Any]) -> str:
    headers = ["ID", "USER", "CLIENT", "SERVER", "POOL", "STATE", "REASON", "AGE", "UP", "DOWN"]
    rows = [[s["id"], s.get("user"), s["client"], s.get("server"), s.get("pool"), s["state"], s.get("reason"),
             age_since(s.get("started")), format_bytes(s.get("bytes_up")), format_bytes(s.get("bytes_down"))]
            for s in data["sessions"]]
    return _table(headers, rows, right=(7, 8, 9))


def hosts(data: dict[str, Any]) -> str:
    headers = ["SERVER", "SOURCE", "SESSIONS", "ACTIVE", "DISC", "AGE", "FRESH", "NEW LOGONS", "LAST ERROR"]
    rows = [[h["server"], h["source"], h["sessions"], h["active"], h["disconnected"],
             MISSING if h.get("age_s") is None else f"{h['age_s']:.0f}s", "yes" if h["fresh"] else "no",
             "refused" if h["deny_new"] else "taken", h.get("last_error")] for h in data["hosts"]]
    text = _table(headers, rows, right=(2, 3, 4, 5))
    duplicates = data.get("duplicates") or []
    if duplicates:
        text += "\n\nusers with sessions on several hosts:\n" + _table(
            ["USER", "SERVERS"], [[d["user"], ", ".join(d["servers"])] for d in duplicates])
    return text


def host_sessions(data: dict[str, Any]) -> str:
    headers = ["USER", "DOMAIN", "STATE", "ID", "LOGON", "DISCONNECTED", "CLIENT"]
    rows = [[s["user"], s.get("domain"), s["state"], s.get("id"), age_since(s.get("logon")),
             age_since(s.get("disconnected")), s.get("client")] for s in data["sessions"]]
    return _table(headers, rows)


def sticky_entry(entry: dict[str, Any]) -> str:
    return format_pairs([
        ("user", safe(entry["user"])),
        ("server", entry["server"]),
        ("pool", entry["pool"]),
        ("created", format_time(entry.get("created"))),
        ("last used", f"{format_time(entry.get('last_used'))} ({age_since(entry.get('last_used'))} ago)"),
        ("open sessions", entry.get("active_sessions")),
    ])


def events(data: dict[str, Any]) -> str:
    rows = [[format_time(e.get("at")), e["server"], f"{e['old']} -> {e['new']}", e.get("reason"),
             e.get("last_error")] for e in data["events"]]
    return _table(["TIME", "SERVER", "CHANGE", "REASON", "LAST ERROR"], rows)


def decisions(data: dict[str, Any]) -> str:
    headers = ["TIME", "SESSION", "CLIENT", "USER", "POOL", "SERVER", "REASON", "ROUTE", "DETAIL"]
    rows = [[format_time(d.get("at")), d.get("session"), d.get("client"), d.get("user"), d.get("pool"),
             d.get("server"), d.get("reason"), d.get("route"), d.get("detail") or None]
            for d in data["decisions"]]
    return _table(headers, rows)


def config(data: dict[str, Any]) -> str:
    return format_pairs([
        ("file", data.get("file")),
        ("listen", ", ".join(data.get("listen") or []) or MISSING),
        ("loaded at", format_time(data.get("loaded_at"))),
        ("last reload", format_time(data.get("last_reload_at"))),
        ("reloads", f"{data.get('reloads_ok', 0)} ok, {data.get('reloads_failed', 0)} failed"),
        ("last reload error", data.get("last_reload_error")),
    ])


def reloaded(data: dict[str, Any]) -> str:
    status = data.get("config", {})
    return f"reloaded {safe(status.get('file'))} (reloads: {status.get('reloads_ok', 0)} ok, " \
           f"{status.get('reloads_failed', 0)} failed)"


def explain(data: dict[str, Any], asked: str | None) -> str:
    """Like `rdpbalancer explain`, with the running balancer's health and sticky table."""
    key, candidates = data.get("user"), data.get("candidates") or []
    lines = [f"user: {safe(asked)} -> key {safe(key)}" if asked and key else "user: - (no cookie)"]
    if len(candidates) > 1 or (key and candidates and candidates[0] != key):
        lines.append(f"truncated name: stands for {', '.join(safe(c) for c in candidates)}")
    if data.get("groups"):
        lines.append(f"groups: {', '.join(safe(g) for g in data['groups'])}")
    lines.append("routes:")
    lines += _steps(data.get("steps") or [])
    lines += _decision(data["decision"])
    return "\n".join(lines)


def _steps(steps: list[dict[str, Any]]) -> list[str]:
    if not steps:
        return ["  (no [[route]]: the first pool serves everyone)"]
    labels = [safe(s["route"]) for s in steps]
    width = max(len(label) for label in labels)
    return [f"  {label:<{width}}  {'MATCH' if s['matched'] else 'no   '}  {safe(s['why'])}".rstrip()
            for label, s in zip(labels, steps, strict=True)]


def _decision(decision: dict[str, Any]) -> list[str]:
    lines = [f"decision: {safe(decision['reason'])}   pool: {safe(decision.get('pool'))}   "
             f"{safe(decision.get('detail') or '')}".rstrip()]
    if decision.get("servers"):
        order = ", ".join(safe(s) for s in decision["servers"])
        lines.append(f"server: {safe(decision['servers'][0])}; would try in order: {order}")
    if decision.get("moved_from"):
        lines.append(f"moved from: {safe(decision['moved_from'])}")
    return lines


def import_report(imported: int, errors: list[str], skipped: Sequence[str] = ()) -> str:
    parts = [f"imported {imported} entr{'y' if imported == 1 else 'ies'}"]
    if skipped:
        parts.append(f"{len(skipped)} line(s) skipped")
    if errors:
        parts.append(f"{len(errors)} error(s)")
    return ", ".join(parts)

