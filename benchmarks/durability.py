"""kill -9 during a logon storm: how many users who reached a server come back to it?

    python benchmarks/durability.py [--reps 3]

The scenario of tests/component/test_durability.py, printed as numbers: a burst of new users
(32 concurrent) through `rdpbalancer run` (sync = "full"), SIGKILL once 150 Connection Requests
reached the fake servers, restart, reconnect every user a server saw.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.storm import BURST_USERS, KILL_AFTER_CRS, kill_during_storm


async def one_run(tmp: Path) -> str:
    before, after = await kill_during_storm(tmp)
    same = sum(after[u] == server for u, server in before.items())
    return f"{len(before)} users had reached a server before SIGKILL; {same}/{len(before)} back on it after restart"


async def main(reps: int) -> None:
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"run {rep + 1}: burst of {BURST_USERS}, kill after {KILL_AFTER_CRS} CRs: {await one_run(Path(tmp))}",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args().reps))
