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
