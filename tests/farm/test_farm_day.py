"""A compressed day of a farm in front of a real balancer node, with chaos, every invariant
checked (tests/farm/sim.py). The invariant checker itself is fed crafted violating traces,
so that an invariant that cannot fail would show (test_invariants.py).

CI: one node with a fixed seed, and two nodes sharing their table through Redis with Sentinel
(the master killed now and then) with a random seed (printed: replay it with the command the
report shows, `python3 -m tests.farm.sim --minutes 2 --seed N --users 40 --hosts 5 --nodes 2
--sentinel`). Each takes about its `minutes` plus half a minute. FARM_SIM_MINUTES changes the
length.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from tests.farm.sim import Params, describe, run

pytestmark = [pytest.mark.real_services, pytest.mark.processes]

FIXED_SEED = 2612
MINUTES = float(os.environ.get("FARM_SIM_MINUTES", "2"))  # the suite stays near 20 minutes


@pytest.mark.timeout(int(MINUTES * 60) + 300)
@pytest.mark.parametrize("which", ["fixed", "random-pair"])
def test_a_day_of_the_farm_keeps_every_invariant(tmp_path: Path, which: str) -> None:
    fixed = which == "fixed"
    seed = FIXED_SEED if fixed else random.SystemRandom().randrange(1 << 31)
    pair = "" if fixed else " --nodes 2 --sentinel"
    print(f"farm simulator seed {seed} (replay: python3 -m tests.farm.sim --minutes {MINUTES:g} "
          f"--seed {seed} --users 40 --hosts 5{pair})")
    report = asyncio.run(run(Params(seed=seed, minutes=MINUTES, users=40, hosts=5, nodes=1 if fixed else 2,
                                    sentinel=not fixed, out=tmp_path / "farm")))
    text = describe(report)
    print(text)
    assert not report.get("violations"), f"{text}\nwhole trace: {tmp_path / 'farm' / 'trace.jsonl'}"
    assert report["checks"].get("inv1", 0) > 40, text  # the day happened: users landed
    assert report["outcomes"].get("landed", 0) > report["outcomes"].get("gave-up", 0), text


@pytest.mark.timeout(300)
def test_the_live_checks_report_a_sabotaged_day(tmp_path: Path) -> None:
    """The same pipeline with connections sent past the balancer to a random host and entries
    deleted through the API: the violations must be reported (an invariant that cannot fail is a
    defect), each with its trace."""
    report = asyncio.run(run(Params(seed=FIXED_SEED, minutes=0.75, users=30, hosts=4, sabotage=0.3,
                                    chaos_every_s=1000.0, out=tmp_path / "farm")))
    text = describe(report)
    found = set(report.get("violations") or {})
    assert {"3-sticky-lost", "5-move-unnamed"} <= found, text
    assert found & {"1-misrouted", "2-second-session"}, text
    assert all(v["trace"] for v in report["violation_details"]), text
