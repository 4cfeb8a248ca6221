"""Benchmark rdpbalancer against a direct connection and HAProxy, in one interleaved run.

    python benchmarks/run.py [--quick] [--reps N] [--scenarios T1,T8,L100,L1000,C32,C32r,M10k,S1M]
    python benchmarks/run.py --scenarios F --targets direct,haproxy,rdpb1   # the RDP session model (issue 26)
    python benchmarks/run.py --netns --scenarios C32,L1000 --targets direct,haproxy,rdpb1,rdpb1t  # transparent mode
                             [--targets direct,haproxy,haproxy-splice,rdpb1,rdpb2] [--out FILE]

Builds the C load generator and test server, then for each repetition runs every scenario
against every target (target order rotated each repetition), each cell with a fresh test server
and a fresh proxy. The proxy is pinned to --proxy-cpus, the load generator and test server to
--load-cpus. Prints progress on stderr, then ONE table on stdout, and writes every run and
summary as JSON. Exit status 1 if any cell failed or saw errors. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the rdpbench package beside this file

from rdpbench import netns, stickydb
from rdpbench.cells import BACKENDS, CellEnv, run_cell, sessions_that_fit
from rdpbench.cprogs import Binaries, build
from rdpbench.procs import BenchError, background_busy_pct, raise_nofile_limit
from rdpbench.report import LEGEND, add_added_latency, render_session_tables, render_table, summarise
from rdpbench.scenarios import CLASSIC, GROUPS, SCENARIOS, Scenario, lookup
from rdpbench.targets import ALL_TARGETS, DEFAULT_TARGETS, POOL_NAME, ProxyOptions, Target, server_names

BACKGROUND_SAMPLE_S = 0.2  # before each cell: CPU use by other processes on this machine
NOISY_BACKGROUND_PCT = 10.0  # above this, the report warns that results are disturbed
DEFAULT_QUIET_WAIT_S = 10.0  # per cell; bounds what a busy shared machine adds to the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and sub-second windows (smoke test)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--scenarios", default="classic",
                        help="comma-separated names or groups (default: classic = " + ",".join(CLASSIC) + "; "
                             "F = the session model: F-office (= " + ",".join(GROUPS["F-office"]) + "; any "
                             "F-office-<N> works), F-storm, F-video; all = classic + F)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"comma-separated (default: {','.join(DEFAULT_TARGETS)}; also: "
                             f"{','.join(t for t in ALL_TARGETS if t not in DEFAULT_TARGETS)})")
    parser.add_argument("--out", default="rdpbench-results.json", help="JSON results file")
    parser.add_argument("--proxy-cpus", default="0", help="CPUs of the proxy under test (default 0)")
    parser.add_argument("--load-cpus", default="1", help="CPUs of load generator and test server (default 1)")
    parser.add_argument("--shared-cpus", action="store_true",
                        help="allow --proxy-cpus and --load-cpus to overlap (a 2-core box measuring 2 workers: "
                             "the proxy then competes with the load side, and the report says so)")
    parser.add_argument("--sync", choices=("full", "normal"), default="full",
                        help="rdpbalancer [sticky] sync (default full, the product default)")
    parser.add_argument("--quiet-wait", type=float, default=None, metavar="SECONDS",
                        help="before each cell, wait up to this long for other processes to leave the CPUs "
                             f"(below {NOISY_BACKGROUND_PCT:g}%% busy); default 10, 0 with --quick")
    parser.add_argument("--workdir", help="keep configs, logs and binaries here (default: a temp dir, removed)")
    parser.add_argument("--netns", nargs="?", const="lo", choices=netns.LAYOUTS,
                        help="run everything in fresh network namespaces with transparent mode's routing "
                             "(contrib/transparent/rdpbalancer-transparent up), deleted afterwards; root only; "
                             "needed by the rdpb1t target. lo (the default): one namespace, all on its loopback; "
                             "veth: load generator, proxies and test server in three namespaces, routed through "
                             "the proxies' one")
    parser.add_argument("--in-netns", metavar="NAME", help=argparse.SUPPRESS)  # set by --netns for the inner run
    args = parser.parse_args(argv)
    args.scenario_map = _pick_scenarios(args.scenarios)
    args.scenario_list = list(args.scenario_map)
    args.target_list = _pick(args.targets, ALL_TARGETS, "target")
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else DEFAULT_QUIET_WAIT_S
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def _pick(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"unknown {what}(s): {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return names


def _pick_scenarios(text: str) -> dict[str, Scenario]:
    """Names and groups (F-office, F, classic, all), in the order given, each once."""
    chosen: dict[str, Scenario] = {}
    unknown = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        for member in GROUPS.get(name, [name]):
            found = lookup(member)
            if found is None:
                unknown.append(member)
            else:
                chosen.setdefault(member, found)
    if unknown or not chosen:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown) or '(none given)'}; known: "
                         f"{', '.join([*GROUPS, *SCENARIOS, 'F-office-<N>', 'F-storm', 'F-video'])}")
    return chosen


def cpu_list(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- set-up -----------------------------------------------------------------------------------


def check_targets(names: list[str], workdir: Path) -> dict[str, str | None]:
    """Each target's reason for being unsupported, or None. A missing HAProxy is an error."""
    status = {name: ALL_TARGETS[name].check(workdir) for name in names}
    for name, reason in status.items():
        if reason is not None:
            progress(f"{name}: unsupported: {reason}")
    return status


def pin_cpus(proxy_cpus: list[int], load_cpus: list[int], shared: bool = False) -> tuple[list[int], list[int]]:
    """Validate the CPU split; on a one-CPU machine nothing is pinned (and the report says so)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        progress("only one CPU: proxy, load generator and test server share it; numbers are not comparable")
        return [], []
    missing = [c for c in proxy_cpus + load_cpus if c not in available]
    if missing or (set(proxy_cpus) & set(load_cpus) and not shared):
        raise BenchError(f"--proxy-cpus and --load-cpus must be distinct CPUs among {available}"
                         " (or allowed to overlap with --shared-cpus)")
    if set(proxy_cpus) & set(load_cpus):
        progress(f"--shared-cpus: the proxy ({proxy_cpus}) shares CPUs with the load side ({load_cpus})")
    os.sched_setaffinity(0, load_cpus)  # this script stays off the proxy's CPU too
    return proxy_cpus, load_cpus


def prepare_sticky_file(args: argparse.Namespace, workdir: Path, usable: list[str]) -> Path | None:
    if "S1M" not in args.scenario_list or not any(ALL_TARGETS[t].kind == "rdpb" for t in usable):
        return None
    entries = SCENARIOS["S1M"].size(args.quick).conns
    path = workdir / f"sticky-{entries}.db"
    progress(f"S1M: writing {entries:,} sticky entries to {path}")
    stickydb.write(path, entries, POOL_NAME, server_names(BACKENDS))
    return path


# --- the run ------------------------------------------------------------------------------------


def empty_cells(args: argparse.Namespace, unsupported: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for name in args.scenario_list:
        scenario = args.scenario_map[name]
        cells[name] = {}
        for target in args.target_list:
            if ALL_TARGETS[target].kind not in scenario.applies_to:
                cells[name][target] = {"status": "n/a", "reason": scenario.not_applicable}
            elif unsupported[target] is not None:
                cells[name][target] = {"status": "unsupported", "reason": unsupported[target]}
            else:
                cells[name][target] = {"runs": []}
    return cells


def run_all(args: argparse.Namespace, binaries: Binaries, opts: ProxyOptions, load_cpus: list[int],
            workdir: Path, cells: dict[str, dict[str, Any]], sticky: Path | None) -> None:
    runnable = [t for t in args.target_list if any("runs" in cells[s][t] for s in cells)]
    for rep in range(args.reps):
        order = runnable[rep % len(runnable):] + runnable[: rep % len(runnable)] if runnable else []
        for s_index, name in enumerate(args.scenario_list):
            for target in order:
                if "runs" not in cells[name][target]:
                    continue
                env = CellEnv(binaries=binaries, load_cpus=load_cpus, proxy=opts, quick=args.quick,
                              cell_dir=workdir / f"rep{rep + 1}" / name / target,
                              cookie_prefix=f"r{rep + 1}s{s_index}", sticky_source=sticky)
                record = run_one(args.scenario_map[name], ALL_TARGETS[target], env, rep + 1, args.quiet_wait)
                cells[name][target]["runs"].append(record)


def wait_for_quiet(budget_s: float) -> float | None:
    """Other processes' CPU use, sampled until it is below NOISY_BACKGROUND_PCT or budget_s is spent."""
    deadline = time.monotonic() + budget_s
    busy = background_busy_pct(BACKGROUND_SAMPLE_S)
    while busy is not None and busy > NOISY_BACKGROUND_PCT and time.monotonic() < deadline:
        busy = background_busy_pct(BACKGROUND_SAMPLE_S)
    return busy


def run_one(scenario: Scenario, target: Target, env: CellEnv, rep: int, quiet_wait_s: float) -> dict[str, Any]:
    background = wait_for_quiet(quiet_wait_s)
    started = time.monotonic()
    try:
        record = {"rep": rep, "background_busy_pct": background, **run_cell(scenario, target, env)}
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        record = {"rep": rep, "failed": str(exc)}
    value = record.get(scenario.primary.key)
    shown = f"{value:,.{scenario.primary.digits}f} {scenario.primary.label}" if value is not None else "-"
    if "failed" in record or record.get("errors"):
        shown += f"  !! {record.get('failed') or record.get('first_error')}"
    progress(f"rep {rep} {scenario.name:<5} {target.name:<14} {shown}  ({time.monotonic() - started:.1f}s)")
    return record


def metadata(args: argparse.Namespace, opts: ProxyOptions, load_cpus: list[int]) -> dict[str, Any]:
    haproxy = shutil.which("haproxy")
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=False).stdout if haproxy else ""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "haproxy": version.splitlines()[0] if version else None,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "quick": args.quick, "reps": args.reps, "quiet_wait_s": args.quiet_wait,
        "proxy_cpus": opts.cpus, "load_cpus": load_cpus, "shared_cpus": bool(set(opts.cpus) & set(load_cpus)),
        "open_files_hard_limit": opts.fd_limit, "rdpbalancer_sticky_sync": opts.sync,
        "netns": args.in_netns,  # --netns: the namespace (with transparent mode's routing) the run was in
        "netns_layout": args.netns if args.in_netns else None,  # lo or veth
        "net": dataclasses.asdict(opts.net),
        "m10k_sessions": sessions_that_fit(SCENARIOS["M10k"].size(args.quick).conns, opts.fd_limit),
        "targets": {t: ALL_TARGETS[t].description for t in args.target_list},
        "scenarios": {s: args.scenario_map[s].title for s in args.scenario_list},
    }


def background_note(results: dict[str, dict[str, Any]]) -> str:
    samples = [(r["background_busy_pct"], f"{s}/{t}/rep{r['rep']}") for s, row in results.items()
               for t, cell in row.items() for r in cell.get("runs", []) if r.get("background_busy_pct") is not None]
    if not samples:
        return "background CPU use: not sampled"
    values = [v for v, _ in samples]
    note = (f"background CPU use by other processes (sampled {BACKGROUND_SAMPLE_S:g}s before each cell, % of all "
            f"CPUs): median {statistics.median(values):.0f}%, max {max(values):.0f}%")
    noisy = [where for value, where in samples if value > NOISY_BACKGROUND_PCT]
    if noisy:
        note += (f"\nWARNING: {len(noisy)} of {len(samples)} cells started on a busy machine "
                 f"(> {NOISY_BACKGROUND_PCT:g}%): {', '.join(noisy)}")
    return note


def transparent_note(results: dict[str, dict[str, Any]], in_netns: str | None) -> str | None:
    """rdpb1t: the connections to servers that came from the client's address, as the balancer counted them."""
    seen = [(s, t, r) for s, row in results.items() for t, cell in row.items() for r in cell.get("runs", [])
            if "backend_seen_client" in r]
    if not seen:
        return None
    client = sum(r["backend_seen_client"] for _, _, r in seen)
    balancer = sum(r["backend_seen_balancer"] for _, _, r in seen)
    where = f"network namespace {in_netns}" if in_netns else "this machine's own network namespace"
    return (f"transparent mode ({', '.join(sorted({t for _, t, _ in seen}))}, {where}): {client:,} connections to "
            f"servers came from the client's address, {balancer:,} from the balancer's "
            "(rdpbalancer_backend_connections_total{seen}, over all its cells)")


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.netns and not args.in_netns:  # this process sets the namespace up, runs itself in it, removes it
        return netns.run_inside(args.netns, raw, progress)
    fd_limit = raise_nofile_limit()
    proxy_cpus, load_cpus = pin_cpus(cpu_list(args.proxy_cpus), cpu_list(args.load_cpus), args.shared_cpus)
    net = netns.veth_net(args.in_netns) if args.netns == "veth" and args.in_netns else netns.Net()
    opts = ProxyOptions(cpus=proxy_cpus, sync=args.sync, fd_limit=fd_limit, net=net)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rdpbench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"work directory {workdir}; building the C programs")
        binaries = build(workdir / "bin")
        unsupported = check_targets(args.target_list, workdir)
        usable = [t for t in args.target_list if unsupported[t] is None]
        cells = empty_cells(args, unsupported)
        sticky = prepare_sticky_file(args, workdir, usable)
        run_all(args, binaries, opts, load_cpus, workdir, cells, sticky)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    scenarios = [args.scenario_map[s] for s in args.scenario_list]
    add_added_latency(scenarios, cells)
    results = summarise(scenarios, cells)
    document = {"meta": metadata(args, opts, load_cpus), "unsupported": {k: v for k, v in unsupported.items() if v},
                "results": results}
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    print(render_table(scenarios, args.target_list, results))
    print(LEGEND)
    session_tables = render_session_tables(scenarios, args.target_list, results)
    if session_tables:
        print(session_tables)
    print(f"JSON: {Path(args.out).resolve()}")
    print(background_note(results))
    note = transparent_note(results, args.in_netns)
    if note:
        print(note)
    bad = [f"{s}/{t}" for s, row in results.items() for t, c in row.items() if c["status"] in ("failed", "errors")]
    if bad:
        print(f"cells with failures or errors: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        sys.exit(2)
