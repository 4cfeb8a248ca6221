"""How long from a server dying to the balancer marking it down, with the default [health].

    python benchmarks/health_detection.py [--reps 3]

Runs the balancer in-process with default check settings (rdp check, interval 3s +-10%,
timeout 2s, fall 3) in front of fake RDP servers on loopback, breaks one server in two ways
(stops listening: connection refused; accepts but never answers: probe timeout) at a random
point of its check cycle, and prints the detection time of each repetition and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rdpbalancer.health.state import Health
from tests.support.balancer import farm_config, running, wait_until
from tests.support.fakes import start_farm

DETECTION_DEADLINE_S = 60.0


async def one_run(kind: str, workdir: Path) -> float:
    farm = await start_farm("A", "B")
    cfg = farm_config([(s.name, s.address, 1) for s in farm], workdir / f"{kind}.db", health="")
    try:
        async with running(cfg) as bal:
            await wait_until(lambda: bal.monitor.trackers["A"].state is Health.UP, 10)
            await asyncio.sleep(random.uniform(0, 3))  # die at a random point of the check cycle
            died = time.monotonic()
            if kind == "refused":
                await farm[0].stop_listening()
            else:
                farm[0].mode = "silent"
            await wait_until(lambda: bal.monitor.trackers["A"].state is Health.DOWN, DETECTION_DEADLINE_S, 0.005)
            return time.monotonic() - died
    finally:
        for s in farm:
            await s.stop()


async def main(reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("refused", "silent"):
            times = [await one_run(kind, Path(tmp)) for _ in range(reps)]
            shown = ", ".join(f"{t:.2f}" for t in times)
            print(f"{kind:8s} detection s: median {statistics.median(times):.2f} (runs: {shown})", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args().reps))
