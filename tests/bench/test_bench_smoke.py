"""The benchmark suite end to end at tiny sizes: `benchmarks/run.py --quick --reps 1`.

Checks that every scenario ran against every target that exists and produced numbers, and
that the table was printed. Speed is never judged here: it lives in the benchmark's output.
HAProxy (the reference) and a C compiler are required: without them this test fails.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
SCENARIOS = ["T1", "T8", "L100", "L1000", "C32", "C32r", "M10k", "S1M"]
TARGETS = ["direct", "haproxy", "haproxy-splice", "rdpb1", "rdpb2"]
LOAD_SCENARIOS = {"T1", "T8", "L100", "L1000", "C32", "C32r"}  # a rate that must be above zero
SETUP_SCENARIOS = {"C32", "C32r"}  # the proxy's CPU per connection is recorded
NOT_APPLICABLE = {("M10k", "direct"), ("S1M", "direct"), ("S1M", "haproxy"), ("S1M", "haproxy-splice")}
RUN_TIMEOUT_S = 240  # the quick run takes well under a minute on an idle 2-core machine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    for tool in ("haproxy", "cc", "taskset"):
        assert shutil.which(tool), f"{tool} is not installed: bash scripts/install-test-deps.sh installs it"
    work = tmp_path_factory.mktemp("bench")
    out = work / "results.json"
    done = subprocess.run([sys.executable, str(RUN), "--quick", "--reps", "1", "--out", str(out)],
                          cwd=work, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"run.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done, json.loads(out.read_text())


def _primary(scenario: str, cell: dict[str, Any]) -> float:
    keys = {"T1": "mb_per_s", "T8": "mb_per_s", "L100": "ops_per_s", "L1000": "ops_per_s", "C32": "ops_per_s",
            "C32r": "ops_per_s", "M10k": "kib_per_session", "S1M": "start_s"}
    value = cell["summary"][keys[scenario]]["median"]
    assert isinstance(value, float | int) and math.isfinite(value), (scenario, value)
    return float(value)


def test_every_scenario_has_every_target(quick_run: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_run
    assert sorted(doc["results"]) == sorted(SCENARIOS)
    for scenario in SCENARIOS:
        assert sorted(doc["results"][scenario]) == sorted(TARGETS), scenario


def test_applicable_cells_have_numbers_and_no_errors(quick_run: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_run
    for scenario in SCENARIOS:
        for target in TARGETS:
            cell = doc["results"][scenario][target]
            if (scenario, target) in NOT_APPLICABLE:
                assert cell["status"] == "n/a" and cell["reason"], (scenario, target)
            elif cell["status"] == "unsupported":
                # only the multi-worker target may be missing, until `[balancer] workers` exists
                assert target == "rdpb2" and "workers" in cell["reason"], (scenario, target, cell)
            else:
                assert cell["status"] == "ok", (scenario, target, cell.get("reason"))
                assert len(cell["runs"]) == 1 and cell["runs"][0]["errors"] == 0
                value = _primary(scenario, cell)
                if scenario in LOAD_SCENARIOS:
                    assert value > 0, (scenario, target)
                if scenario in SETUP_SCENARIOS and target != "direct":  # direct has no proxy process
                    assert cell["runs"][0]["proxy_us_per_op"] > 0, (scenario, target)


def test_ratios_are_paired_with_the_references(quick_run: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_run
    for scenario in LOAD_SCENARIOS:
        for target in ("direct", "haproxy", "rdpb1"):
            cell = doc["results"][scenario][target]
            assert cell["ratio_to_direct"]["median"] > 0 and cell["ratio_to_haproxy"]["median"] > 0
        assert doc["results"][scenario]["direct"]["ratio_to_direct"]["median"] == pytest.approx(1.0)


def test_one_table_is_printed(quick_run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    done, _ = quick_run
    lines = done.stdout.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("scenario") and "x haproxy" in line]
    assert len(header) == 1, done.stdout
    body = lines[header[0] + 2 : header[0] + 2 + len(SCENARIOS) * len(TARGETS)]
    assert [line.split()[0] for line in body if not line.startswith(" ")] == SCENARIOS
    for index, line in enumerate(body):
        assert TARGETS[index % len(TARGETS)] in line.split(), line
