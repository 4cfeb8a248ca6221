"""contrib/: the Grafana dashboard and the systemd unit cannot drift from the code.

Every metric the dashboard queries must be in a real exposition of a running balancer, with the
labels the queries use; every metric the balancer exposes must be on the dashboard. The unit's
commands must be commands the CLI has, and `systemd-analyze verify` must accept it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rdpbalancer.app import Balancer
from rdpbalancer.cli import _parser
from rdpbalancer.config import parse_config
from tests.support.balancer import farm_config, refused_port, wait_until
from tests.support.fakes import rdp_connect, start_farm, where

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana-dashboard.json"
UNIT = ROOT / "contrib" / "rdpbalancer.service"
METRIC = re.compile(r"\brdpbalancer_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(rdpbalancer_[a-z0-9_]+)\{([^}]*)\}")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
PROMETHEUS_LABELS = {"instance", "job"}  # added by the scrape, not by the balancer
GROUP = '[groups.Admins]\nmembers = ["alice"]\n'  # gives the directory a data age
# a session directory with a command source that answers: host sessions, source age and up
SESSIONS = '[sessions]\nsource = "command"\ninterval = "1s"\ncommand = ["{python}", "-c", "{program}"]\n'
PROGRAM = "import json; print(json.dumps({'sessions': [{'user': 'alice', 'state': 'disconnected'}]}))"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def expressions() -> list[str]:
    data = dashboard()
    found = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    return found + [a["expr"] for a in data["annotations"]["list"] if "expr" in a]


async def exposition(tmp_path: Path) -> str:
    """/metrics of a balancer with some traffic: a live session, a failed connect, junk, health checks, a reload."""
    with refused_port() as dead_port:  # TS09: nothing listens there, connection refused
        return await _exposition(tmp_path, dead_port)


async def _exposition(tmp_path: Path, dead_port: int) -> str:
    farm = await start_farm("TS01", "TS02")
    dead = ("TS09", f"127.0.0.1:{dead_port}", 1)
    text = farm_config([*((s.name, s.address, 1) for s in farm), dead], tmp_path / "s.db",
                       health='check = "rdp"\ninterval = "1s"') + GROUP + \
        SESSIONS.format(python=sys.executable, program=PROGRAM.replace('"', '\\"'))
    text = text.replace("weight = 1 }", "weight = 1, max_sessions = 100 }", 1)  # a cap on TS01
    config = tmp_path / "c.toml"
    config.write_text(text)
    bal = Balancer(parse_config(text, str(config)))
    bal.reloader.status.path = str(config)
    await bal.start()
    client = None
    try:
        port = bal.addresses[0][1]
        await bal.ops.set_sticky("bob", "TS09")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await where(port, "bob")  # TS09 does not answer: a failed connect
        assert bal.ctx.stats.connect_failures["TS09"] >= 1
        client = await rdp_connect(port, "alice")  # open while the metrics are read
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")  # not a Connection Request
        await writer.drain()
        await wait_until(lambda: bool(bal.ctx.stats.malformed), timeout_s=5)
        writer.close()
        await wait_until(lambda: all(t.checked and t.last_check for t in bal.monitor.trackers.values()),
                         timeout_s=10)
        directory = bal.router.host_sessions
        assert directory is not None
        await wait_until(lambda: len([r for r in directory.reports.values() if r.at]) == 3,
                         timeout_s=10)
        assert await bal.reloader.reload() is None
        return bal.metrics.exposition().decode()
    finally:
        if client is not None:
            client.writer.transport.abort()
        await bal.stop()
        for s in farm:
            await s.stop()


def exposed(text: str) -> dict[str, set[str]]:
    """Sample name -> its label names, in a text exposition (`_created` series left out)."""
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def families(text: str) -> dict[str, set[str]]:
    """Family name -> its sample names."""
    return {f.name: {s.name for s in f.samples} for f in text_string_to_metric_families(text)
            if not f.name.endswith("_created")}  # prometheus_client's creation times: not metrics to chart


# -- the dashboard --------------------------------------------------------------------------------------

def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 36 and data["uid"] == "rdpbalancer"
    assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    panels = data["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
            assert panel["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
    names = {v["name"] for v in data["templating"]["list"]}
    assert names == {"instance", "server"}
    for expr in expressions():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


async def test_dashboard_and_metrics_match(tmp_path: Path) -> None:
    text = await exposition(tmp_path)
    samples, by_family = exposed(text), families(text)
    exprs = expressions()
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= set(samples), f"queried but not exposed: {sorted(used - set(samples))}"
    unused = {family for family, names in by_family.items() if not names & used}
    assert not unused, f"exposed but not on the dashboard: {sorted(unused)}"
    for expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            labels = {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",") if m.strip()}
            assert labels <= samples[name] | PROMETHEUS_LABELS, (expr, labels - samples[name])
        known = set().union(*(samples[n] for n in METRIC.findall(expr))) | PROMETHEUS_LABELS
        for grouping in GROUPING.findall(expr):
            assert {g.strip() for g in grouping.split(",")} <= known, expr


def test_the_metrics_source_is_still_where_this_test_looks() -> None:
    """A guard for the test above: the metric names it checks are made in rdpbalancer/metrics.py."""
    source = (ROOT / "rdpbalancer" / "metrics.py").read_text()
    assert 'P = "rdpbalancer_"' in source


# -- the systemd unit ---------------------------------------------------------------------------------------

def unit_settings() -> dict[str, list[str]]:
    """Key -> every value it is given (systemd allows a key several times)."""
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_runs_the_balancer_as_a_notify_service() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"] and unit["User"] == ["rdpbalancer"]
    assert unit["ExecStart"] == ["/usr/local/bin/rdpbalancer run -c /etc/rdpbalancer/config.toml"]
    assert unit["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert unit["StateDirectory"] == unit["RuntimeDirectory"] == unit["ConfigurationDirectory"] == ["rdpbalancer"]
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    for key in ("NoNewPrivileges", "MemoryDenyWriteExecute", "LockPersonality", "PrivateTmp", "ProtectHome"):
        assert unit[key] == ["yes"], key
    assert "DynamicUser" not in unit


def test_unit_commands_are_cli_commands() -> None:
    unit = unit_settings()
    commands = unit["ExecStartPre"] + unit["ExecStart"] + unit["ExecReload"][:-1]
    for command in commands:
        program, *argv = command.split()
        assert program == "/usr/local/bin/rdpbalancer"
        assert _parser().parse_args(argv).command in ("run", "check-config")


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: bash scripts/install-test-deps.sh installs it"
    # verify checks that the programs exist: point them at one that does
    copy = tmp_path / "rdpbalancer.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/rdpbalancer", str(Path(sys.executable).resolve())))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
