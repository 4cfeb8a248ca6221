"""Profile a proxy under the RDP session model (F-office-<N>, F-video, F-storm): where its time goes.

    python benchmarks/profile_sessions.py [--scenario F-office-1000] [--target rdpb1] [--tool strace]
                                          [--seconds 5]

Starts the C test server and the target (any of run.py's targets, pinned to CPU 0) and the
session load generator (CPU 1); once the sessions have run for 2 s, runs the tool over the
measured window of --seconds (F-storm: over the first --seconds after the drop, while the users
reconnect) and prints its summary:
  strace  syscalls of the proxy (all its processes) by kind, and per input round trip (an input
          and its update, plus the heartbeats, bursts and frames in between): counts, not times
          (strace slows the proxy down; its latencies mean nothing in this mode)
  perf    `perf record -g` of the proxy's processes: the hottest symbols, kernel and user
  pyspy   `py-spy record` (every thread, not only the GIL holder): the hottest Python frames
Bounded: one load generator run; every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_setup import report as pyspy_report
from rdpbench import cprogs, procs
from rdpbench.cells import BACKENDS
from rdpbench.scenarios import lookup
from rdpbench.targets import ALL_TARGETS, ProxyOptions

TOOLS = {"strace": "strace", "perf": "perf", "pyspy": "py-spy"}
TOOL_STOP_S = 30.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="F-office-1000", help="F-office-<N>, F-video or F-storm")
    ap.add_argument("--target", default="rdpb1", choices=[t for t in ALL_TARGETS if t != "direct"])
    ap.add_argument("--tool", default="strace", choices=list(TOOLS))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, help="keep the tool's raw output here")
    args = ap.parse_args()
    if shutil.which(TOOLS[args.tool]) is None:
        raise SystemExit(f"{TOOLS[args.tool]} is not installed")
    scenario = lookup(args.scenario)
    if scenario is None or scenario.session is None:
        raise SystemExit(f"not a session scenario: {args.scenario}")
    spec = scenario.session
    target = ALL_TARGETS[args.target]
    with tempfile.TemporaryDirectory(prefix="rdpb-profile-") as tmp:
        work = Path(tmp)
        binaries = cprogs.build(work / "bin")
        options = ProxyOptions(cpus=[0], fd_limit=procs.raise_nofile_limit(), sync="full")
        storm = spec.storm_s
        load_options = {"sessions": scenario.default.conns, "warmup": "2",
                        "duration": f"{scenario.default.duration_s if storm else args.seconds:g}",
                        "mix": ",".join(f"{m:g}" for m in spec.mix), "pinned-video": spec.pinned_video,
                        "burst": 64, "seed": 26, "cookie-prefix": "p", "timeout": f"{args.seconds + 150:g}",
                        **({"storm": f"{storm:g}"} if storm else {})}
        raw = args.out or work / f"{args.tool}.out"
        with cprogs.TestServer(binaries.server, [1], BACKENDS, work / "server.log") as server, \
                target.running(work, server.ports, options) as proxy, \
                cprogs.SessionLoad(cprogs.sessions_argv(binaries, [1], proxy.port, load_options),
                                   args.seconds + 150) as load:
            assert proxy.pid is not None
            if not load.wait_event("window_start"):
                raise SystemExit(f"the sessions never started: {load.finish().get('first_error')}")
            if storm:
                load.wait_event("drop")
            cpu_before = procs.cpu_s(proxy.pid)
            tool = start_tool(args.tool, procs.tree(proxy.pid), raw, args.seconds)
            if storm:
                time.sleep(args.seconds)
            else:
                load.wait_event("window_end")
            stop_tool(tool)
            cpu_s = procs.cpu_s(proxy.pid) - cpu_before
            result = load.finish()
        lat = result["lat"]["reconnect" if storm else "input"]
        inputs = result["storm"]["back"] if storm else result["inputs_window"]
        what = "reconnections (all, not only those profiled)" if storm else "inputs in the window"
        print(f"{scenario.name} through {args.target}: {inputs:,} {what}, p50 "
              f"{lat['p50_us'] / 1000:.3f} ms, p99 {lat['p99_us'] / 1000:.3f} ms (under {args.tool}); proxy CPU "
              f"{100 * cpu_s / args.seconds:.0f}% of a core, {1e6 * cpu_s / max(inputs, 1):.0f} us per input")
        if args.tool == "strace":
            strace_report(raw, inputs)
        elif args.tool == "perf":
            perf_report(raw)
        else:
            pyspy_report(raw)
    return 0


def start_tool(tool: str, pids: list[int], raw: Path, seconds: float) -> subprocess.Popen[bytes]:
    pid_list = ",".join(map(str, pids))
    if tool == "strace":
        argv = ["strace", "-c", "-f", "-o", str(raw), *[a for p in pids for a in ("-p", str(p))]]
    elif tool == "perf":
        argv = ["perf", "record", "-F", "1999", "-g", "-p", pid_list, "-o", str(raw)]
    else:
        argv = ["py-spy", "record", "--format", "raw", "--rate", "200", "--duration", str(int(seconds)),
                "--subprocesses", "--pid", str(pids[0]), "-o", str(raw)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_tool(tool: subprocess.Popen[bytes]) -> None:
    if tool.poll() is None:
        tool.send_signal(signal.SIGINT)
    try:
        tool.wait(TOOL_STOP_S)
    except subprocess.TimeoutExpired:
        tool.kill()
        tool.wait()


def strace_report(raw: Path, inputs: int) -> None:
    print(f"\n{'calls':>10} {'per input':>10}  syscall")
    total = 0
    for line in raw.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] not in ("total",):
            calls = int(parts[3])
            total += calls
            print(f"{calls:>10,} {calls / max(inputs, 1):>10.2f}  {parts[-1]}")
    print(f"{total:>10,} {total / max(inputs, 1):>10.2f}  all")


def perf_report(raw: Path) -> None:
    for sort, limit in (("dso", "0.5"), ("dso,sym", "1")):
        done = subprocess.run(["perf", "report", "-i", str(raw), "--stdio", "--no-children", "--sort", sort,
                               "--percent-limit", limit, "-g", "none"], capture_output=True, text=True, check=False,
                              timeout=120)
        print(f"\nby {sort}:")
        print("\n".join(line for line in done.stdout.splitlines() if line.strip() and not line.startswith("#")))


if __name__ == "__main__":
    raise SystemExit(main())
