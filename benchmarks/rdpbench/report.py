"""Summaries (median, min, max; ratios paired per repetition), the one table, the JSON document."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from rdpbench.scenarios import Scenario

Record = dict[str, Any]
REFERENCES = (("direct", "ratio_to_direct"), ("haproxy", "ratio_to_haproxy"))
CPU_KEYS = ("proxy_cpu_pct", "proxy_core_busy_pct", "load_core_busy_pct")
MAX_REASON = 70  # characters of an unsupported/failed reason shown in the table


def spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def numeric_keys(runs: list[Record]) -> list[str]:
    keys = {k for run in runs for k, v in run.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return sorted(keys - {"rep"})


def summarise_cell(runs: list[Record]) -> Record:
    measured = [r for r in runs if "failed" not in r]
    failed = [r for r in runs if "failed" in r]
    errors = [r for r in measured if r.get("errors")]
    cell: Record = {"status": "failed" if failed else "errors" if errors else "ok", "runs": runs}
    if failed or errors:
        cell["reason"] = failed[0]["failed"] if failed else errors[0]["first_error"]
    cell["summary"] = {k: spread([r[k] for r in measured if r.get(k) is not None]) for k in numeric_keys(measured)}
    return cell


def paired_ratios(scenario: Scenario, cell: Record, reference: Record | None) -> dict[str, float] | None:
    """Ratio of this target's primary metric to the reference's, per repetition, then summarised."""
    if reference is None or "runs" not in reference or "runs" not in cell:
        return None
    key = scenario.primary.key
    ref_by_rep = {r["rep"]: r.get(key) for r in reference["runs"] if "failed" not in r}
    ratios = [r[key] / ref_by_rep[r["rep"]] for r in cell["runs"]
              if "failed" not in r and r.get(key) is not None and ref_by_rep.get(r["rep"])]
    return spread(ratios)


def summarise(scenarios: list[Scenario], cells: dict[str, dict[str, Record]]) -> dict[str, dict[str, Record]]:
    """cells[scenario][target] holds either {"runs": [...]} or a status ("n/a", "unsupported")."""
    out: dict[str, dict[str, Record]] = {}
    for scenario in scenarios:
        row = {t: summarise_cell(c["runs"]) if "runs" in c else c for t, c in cells[scenario.name].items()}
        for cell in row.values():
            for ref_name, field in REFERENCES:
                if "runs" in cell:
                    cell[field] = paired_ratios(scenario, cell, row.get(ref_name))
        out[scenario.name] = row
    return out


# --- the table ------------------------------------------------------------------------------------

HEADER = ("scenario", "target", "median", "[min .. max]", "x direct", "x haproxy", "details (medians)",
          "proxy CPU", "proxy core", "load core")


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _median(cell: Record, key: str) -> float | None:
    found = cell.get("summary", {}).get(key)
    return None if found is None else found["median"]


def _row(scenario: Scenario, target: str, cell: Record, first: bool) -> tuple[str, ...]:
    arrow = "↑" if scenario.primary.higher_is_better else "↓"
    label = f"{scenario.name} {scenario.primary.label} {arrow}" if first else ""
    if "summary" not in cell or cell["summary"].get(scenario.primary.key) is None:
        reason = (cell.get("reason") or "")[:MAX_REASON]
        return (label, target, cell["status"], "", "", "", reason, "", "", "")
    p = scenario.primary
    s = cell["summary"][p.key]
    details = ", ".join(f"{m.label} {_num(_median(cell, m.key), m.digits)}"
                        for m in scenario.extras if m.key not in CPU_KEYS)
    if cell["status"] != "ok":
        details = f"{cell['status'].upper()}: {(cell.get('reason') or '')[:MAX_REASON]}; {details}"
    ratios = [_num((cell.get(field) or {}).get("median"), 2) for _, field in REFERENCES]
    cpus = [_pct(_median(cell, k)) for k in CPU_KEYS]
    return (label, target, _num(s["median"], p.digits), f"[{_num(s['min'], p.digits)} .. {_num(s['max'], p.digits)}]",
            *ratios, details, *cpus)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render_table(scenarios: list[Scenario], targets: list[str], results: dict[str, dict[str, Record]]) -> str:
    rows = [HEADER]
    for scenario in scenarios:
        rows += [_row(scenario, t, results[scenario.name][t], i == 0) for i, t in enumerate(targets)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    numeric = {2, 3, 4, 5, 7, 8, 9}
    lines = []
    for index, row in enumerate(rows):
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


LEGEND = """\
↑ higher is better, ↓ lower is better. median [min .. max] over the repetitions; "x direct" and
"x haproxy" are the primary metric divided by that target's in the same repetition (median of the
per-repetition ratios). "proxy CPU": CPU time of the proxy's processes over the load generator's
run, in % of one core. "proxy core" / "load core": how busy the proxy's core and the core shared
by load generator and test server were (from /proc/stat, so including the kernel's softirq work
for loopback TCP that no process is charged for); a load core near 100% means the load side,
not the proxy, set the pace."""


# --- the session model (F-office, F-storm, F-video) -------------------------------------------------

KNEE_ADDED_P99_MS = 2.0  # the knee: the largest N whose added p99 stays at or below this
ADDED = (("in_p50_ms", "added_p50_ms"), ("in_p99_ms", "added_p99_ms"), ("in_p999_ms", "added_p999_ms"))


def add_added_latency(scenarios: list[Scenario], cells: dict[str, dict[str, Record]]) -> None:
    """Session scenarios: each run's input round-trip percentiles minus direct's in the same
    repetition (added_p50_ms, ...), so the medians over repetitions are of paired differences."""
    for scenario in scenarios:
        if scenario.kind != "session":
            continue
        row = cells[scenario.name]
        direct = {r["rep"]: r for r in row.get("direct", {}).get("runs", []) if "failed" not in r}
        for cell in row.values():
            for run in cell.get("runs", []):
                ref = direct.get(run["rep"])
                for absolute, added in ADDED:
                    if ref is not None and run.get(absolute) is not None and ref.get(absolute) is not None:
                        run[added] = run[absolute] - ref[absolute]


def _office_sessions(scenario: Scenario) -> int | None:
    return scenario.default.conns if scenario.name.startswith("F-office-") else None


def knee(office: list[tuple[int, Record]]) -> str:
    """The largest N whose median added p99 is <= KNEE_ADDED_P99_MS (and whose cell had no errors)."""
    passing = [n for n, cell in office if cell.get("status") == "ok"
               and (_median(cell, "added_p99_ms") is not None)
               and _median(cell, "added_p99_ms") <= KNEE_ADDED_P99_MS]  # type: ignore[operator]
    measured = [n for n, cell in office if _median(cell, "added_p99_ms") is not None]
    if not measured:
        return "-"
    if not passing:
        return f"< {min(measured)} (no size passed)"
    best = max(passing)
    above = [n for n in measured if n > best]
    if not above:
        return f">= {best} (the largest size tried)"
    failing_below = [n for n in measured if n < best and n not in passing]
    note = f"; but not at {', '.join(map(str, failing_below))}" if failing_below else ""
    return f"{best} (fails at {min(above)}{note})"


def render_session_tables(scenarios: list[Scenario], targets: list[str], results: dict[str, dict[str, Record]]) -> str:
    """The F-office table with the knees, then F-storm, F-failover and F-video, or "" if none of them ran."""
    parts = []
    office = sorted((n, s) for s in scenarios if (n := _office_sessions(s)) is not None)
    if office:
        rows = [("N", "target", "added p50", "added p99", "[min .. max]", "added p99.9", "abs p99", "proxy CPU/1000",
                 "RSS MB", "proxy core", "load core", "others", "status")]
        for n, scenario in office:
            for target in targets:
                cell = results[scenario.name][target]
                if "summary" not in cell:
                    continue
                p50, p99, p999 = (_num(_median(cell, k), 3) for _, k in ADDED)
                rows.append((str(n), target, p50, p99, _range(cell, "added_p99_ms", 3), p999,
                             _num(_median(cell, "in_p99_ms"), 3), _pct(_median(cell, "proxy_cpu_per_1k_pct")),
                             _num(_median(cell, "rss_mb"), 0), _pct(_median(cell, "proxy_core_busy_pct")),
                             _pct(_median(cell, "load_core_busy_pct")), _pct(_median(cell, "others_cpu_pct")),
                             cell["status"]))
        parts.append("F-office: input -> update round trip, added = through the target minus direct in the same "
                     "repetition, ms (medians); 'others' = CPU used by other people's processes during the window, "
                     "% of one core (high: discount the row)\n" + _grid(rows))
        knees = [f"  {t}: {knee([(n, results[s.name][t]) for n, s in office])}"
                 for t in targets if t != "direct"]
        parts.append(f"knee (largest N with added p99 <= {KNEE_ADDED_P99_MS:g} ms, proxy on one core):\n"
                     + "\n".join(knees))
    for name, title in (("F-storm", "F-storm: every session dropped at once, each user back within the spread"),
                        ("F-failover", "F-failover: every session dropped as the proxy is killed (SIGKILL) and "
                                       "started again, each user back within the spread")):
        if name not in results:
            continue
        rows = [("target", "users", "back", "all back s", "refusals", "lost", "same host", "moved", "reconnect p50",
                 "reconnect p99", "restart s", "status")]
        for target in targets:
            cell = results[name][target]
            if "summary" in cell:
                rows.append((target, *(_num(_median(cell, k), d) for k, d in (
                    ("storm_users", 0), ("storm_back", 0), ("storm_all_back_s", 2), ("storm_refusals", 0),
                    ("storm_lost", 0), ("storm_same", 0), ("storm_moved", 0), ("reconnect_p50_ms", 2),
                    ("reconnect_p99_ms", 2), ("restart_s", 2))), cell["status"]))
        parts.append(f"{title} (medians; ms; direct has one backend, so its 'same host' says nothing)\n"
                     + _grid(rows))
    if "F-video" in results:
        rows = [("target", "others' p50", "others' p99", "p99.9", "added p99", "frame p99", "frames skipped %",
                 "MB/s", "proxy core", "load core", "other procs", "status")]
        for target in targets:
            cell = results["F-video"][target]
            if "summary" in cell:
                rows.append((target, *(_num(_median(cell, k), 3) for k in ("in_p50_ms", "in_p99_ms", "in_p999_ms",
                                                                           "added_p99_ms")),
                             _num(_median(cell, "frame_p99_ms"), 2), _num(_median(cell, "frames_skipped_pct"), 1),
                             _num(_median(cell, "mb_per_s"), 1), _pct(_median(cell, "proxy_core_busy_pct")),
                             _pct(_median(cell, "load_core_busy_pct")), _pct(_median(cell, "others_cpu_pct")),
                             cell["status"]))
        parts.append("F-video: input round trips (ms) of the sessions not in video while 20 % stream video\n"
                     + _grid(rows))
    return "\n\n".join(parts)


def _range(cell: Record, key: str, digits: int) -> str:
    found = cell.get("summary", {}).get(key)
    return "" if found is None else f"[{_num(found['min'], digits)} .. {_num(found['max'], digits)}]"


def _grid(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             .rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
