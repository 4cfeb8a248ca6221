"""Profile rdpbalancer with py-spy under one load scenario: where a C32 or C32r connection's CPU
goes, or an L1000 message's.

    python benchmarks/profile_setup.py [--scenario C32r|C32|L1000|L100|T1] [--seconds 8] [--relay auto]
                                       [--log-level warning]

Starts the C test server, rdpbalancer from this checkout (pinned to CPU 0, the configuration
of benchmarks/run.py's rdpb1 target) and the load generator (CPU 1). Records the balancer with
`py-spy record --gil` (the thread holding the GIL: the event loop, or the sticky writer) for
--seconds while the load runs, and prints the hottest frames (own time, and with callees) as
shares of all samples. `pip install py-spy` first. Bounded: one load generator run of
--seconds; every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rdpbench import cprogs, procs
from rdpbench.cells import BACKENDS
from rdpbench.scenarios import SCENARIOS
from rdpbench.targets import ProxyOptions, Rdpbalancer

TOP = 30


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="C32r", choices=[n for n, sc in SCENARIOS.items() if sc.kind == "load"])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--relay", default="auto", choices=["auto", "copy", "splice"])
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--out", type=Path, help="keep py-spy's raw samples here")
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    scenario = SCENARIOS[args.scenario]
    size = scenario.default
    with tempfile.TemporaryDirectory(prefix="rdpb-profile-") as tmp:
        work = Path(tmp)
        binaries = cprogs.build(work / "bin")
        options = ProxyOptions(cpus=[0], fd_limit=procs.raise_nofile_limit(), sync="full",
                               rdpb_log_level=args.log_level)
        target = Rdpbalancer("rdpb1", workers=1, relay=None if args.relay == "auto" else args.relay)
        extra = {"users": size.users} if size.users else None
        with cprogs.TestServer(binaries.server, [1], BACKENDS, work / "server.log") as server, \
                target.running(work, server.ports, options) as proxy:
            assert proxy.pid is not None
            if size.users:
                cprogs.run_loadgen(cprogs.loadgen_argv(binaries, [1], proxy.port, "setup", size.conns, 30,
                                                       "p", {**extra, "max-ops": size.users}), 30)  # type: ignore[dict-item]
            raw = args.out or work / "samples.txt"
            spy = subprocess.Popen(["py-spy", "record", "--gil", "--format", "raw", "--rate", "200",
                                    "--duration", str(int(args.seconds)), "--pid", str(proxy.pid), "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            result = cprogs.run_loadgen(cprogs.loadgen_argv(binaries, [1], proxy.port, scenario.mode, size.conns,
                                                            args.seconds, "p", extra), args.seconds)
            spy.wait(timeout=args.seconds + 30)
        print(f"{args.scenario}: {result['ops_per_s']:,.0f} operations/s while profiled")
        report(raw)
    return 0


def report(raw: Path) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " " + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"{samples} samples")
    print(f"\n{'own %':>6}  frame")
    for frame, n in own.most_common(TOP):
        print(f"{100 * n / samples:6.1f}  {frame}")
    print(f"\n{'total %':>7}  frame (with callees)")
    for frame, n in total.most_common(TOP):
        print(f"{100 * n / samples:7.1f}  {frame}")


if __name__ == "__main__":
    raise SystemExit(main())
