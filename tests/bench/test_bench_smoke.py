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


# --- the RDP session model (issue 26): F-office, F-storm, F-video at tiny sizes --------------------

F_SCENARIOS = ["F-office-500", "F-office-1000", "F-storm", "F-failover", "F-video"]
F_STORMS = {"F-storm", "F-failover"}
F_TARGETS = ["direct", "haproxy", "rdpb1"]
F_LATENCY_FIELDS = ("in_p50_ms", "in_p99_ms", "in_p999_ms")
F_PROXY_FIELDS = ("proxy_cpu_pct", "proxy_cpu_per_1k_pct", "rss_mb")
F_STORM_FIELDS = ("storm_users", "storm_back", "storm_lost", "storm_refusals", "storm_moved", "storm_same",
                  "storm_all_back_s", "reconnect_p99_ms")


@pytest.fixture(scope="module")
def quick_session_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                                          dict[str, Any]]:
    for tool in ("haproxy", "cc", "taskset"):
        assert shutil.which(tool), f"{tool} is not installed: bash scripts/install-test-deps.sh installs it"
    work = tmp_path_factory.mktemp("bench-f")
    out = work / "results.json"
    argv = [sys.executable, str(RUN), "--quick", "--reps", "1", "--scenarios", ",".join(F_SCENARIOS),
            "--targets", ",".join(F_TARGETS), "--out", str(out)]
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"run.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done, json.loads(out.read_text())


def _run_of(doc: dict[str, Any], scenario: str, target: str) -> dict[str, Any]:
    cell = doc["results"][scenario][target]
    assert cell["status"] == "ok", (scenario, target, cell.get("reason"))
    assert len(cell["runs"]) == 1 and cell["runs"][0]["errors"] == 0, (scenario, target)
    run: dict[str, Any] = cell["runs"][0]
    return run


def test_session_scenarios_report_their_fields(quick_session_run: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_session_run
    assert sorted(doc["results"]) == sorted(F_SCENARIOS)
    for scenario in F_SCENARIOS:
        for target in F_TARGETS:
            if (scenario, target) == ("F-failover", "direct"):
                assert doc["results"][scenario][target]["status"] == "n/a"
                continue
            run = _run_of(doc, scenario, target)
            assert run["established"] == run["sessions"] > 0, (scenario, target)
            assert sum(run["per_backend"]) == run["sessions"], (scenario, target)
            if scenario not in F_STORMS:
                assert run["inputs_measured"] > 0, (scenario, target)
                for field in F_LATENCY_FIELDS:
                    assert math.isfinite(run[field]) and run[field] >= 0, (scenario, target, field)
                for field in ("added_p50_ms", "added_p99_ms", "added_p999_ms"):
                    assert math.isfinite(run[field]), (scenario, target, field)  # may be negative: noise
            if target != "direct":
                for field in F_PROXY_FIELDS:
                    assert run[field] is not None and run[field] >= 0, (scenario, target, field)
    for target in F_TARGETS:
        video = _run_of(doc, "F-video", target)
        assert video["frame_p99_ms"] is not None and video["mb_per_s"] > 0, target
        for scenario in sorted(F_STORMS):
            if (scenario, target) == ("F-failover", "direct"):
                continue
            storm = _run_of(doc, scenario, target)
            for field in F_STORM_FIELDS:
                assert storm[field] is not None, (scenario, target, field)
            assert storm["storm_back"] + storm["storm_lost"] == storm["storm_users"] == storm["sessions"], target
            if scenario == "F-failover":
                assert storm["restart_s"] is not None and storm["restart_s"] > 0, target


def test_session_tables_are_printed(quick_session_run: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    done, _ = quick_session_run
    out = done.stdout
    for heading in ("F-office: input -> update round trip", "knee (largest N with added p99 <= 2 ms",
                    "F-storm: every session dropped at once", "F-failover: every session dropped",
                    "F-video: input round trips"):
        assert heading in out, heading
    knees = out.split("knee (largest N", 1)[1].split("\n\n", 1)[0]
    for target in ("haproxy", "rdpb1"):
        assert f"  {target}: " in knees, knees
