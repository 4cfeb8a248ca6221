"""kill -9 during a logon storm: how many users who reached a server come back to it?

    python benchmarks/durability.py [--reps 3]

The scenario of tests/component/test_durability.py, printed as numbers: a burst of new users
(32 concurrent) through `rdpbalancer run` (sync = "full"), SIGKILL once 150 Connection Requests
reached the fake servers, restart, reconnect every user a server saw.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.component.test_durability import BURST_USERS, KILL_AFTER_CRS, assignments, burst
from tests.support.balancer import BalancerProcess, farm_config, free_port
from tests.support.fakes import start_farm, where


async def one_run(tmp: Path) -> str:
    farm = await start_farm("TS01", "TS02", "TS03")
    port = free_port()
    cfg = tmp / "c.toml"
    text = farm_config([(s.name, s.address, 1) for s in farm], tmp / "sticky.db", listen=f"127.0.0.1:{port}")
    cfg.write_text(text.replace('sync = "normal"', 'sync = "full"'))
    proc = BalancerProcess(cfg, port, tmp / "b.log")
    try:
        await asyncio.to_thread(proc.start)
        storm = asyncio.create_task(burst(port, [f"storm{i:04d}" for i in range(BURST_USERS)]))
        while sum(len(s.cookies) for s in farm) < KILL_AFTER_CRS:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(proc.signal, signal.SIGKILL)
        await storm
        before = assignments(farm)
        await asyncio.to_thread(proc.start)
        same = sum([await where(port, u) == server for u, server in before.items()])
        return f"{len(before)} users had reached a server before SIGKILL; {same}/{len(before)} back on it after restart"
    finally:
        proc.stop()
        for s in farm:
            await s.stop()


async def main(reps: int) -> None:
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"run {rep + 1}: burst of {BURST_USERS}, kill after {KILL_AFTER_CRS} CRs: {await one_run(Path(tmp))}",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args().reps))
