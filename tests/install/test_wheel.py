"""The built wheel, installed into a fresh venv and run from a folder outside the checkout, as a
user runs it: check-config, a balancer serving the dashboard and routing a connection, the demo,
ctl. The editable install of the test run is never on these processes' path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.balancer import BalancerProcess, farm_config, process_gone, wait_for_api, wait_until
from tests.support.dashboard import fetch_dashboard
from tests.support.fakes import start_farm, where
from tests.support.packaging import ROOT, clean_copy, project_version, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # pip may download every dependency


def clean_env() -> dict[str, str]:
    """The environment without anything that could put the checkout on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def outside(tmp_path: Path) -> Path:
    away = tmp_path / "elsewhere"
    away.mkdir()
    assert ROOT not in away.parents
    return away


def test_the_wheel_carries_the_dashboard(wheelhouse: Path) -> None:
    (wheel,) = wheelhouse.glob("rdpbalancer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("dashboard.html", "dashboard.js", "dashboard.css", "favicon.svg"):
        assert f"rdpbalancer/admin/static/{asset}" in names
    assert wheel.name.startswith(f"rdpbalancer-{project_version()}-")


def test_the_sdist_carries_the_dashboard_and_the_example(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "source")
    run([sys.executable, "-c", "import setuptools.build_meta as b, sys; b.build_sdist(sys.argv[1])", str(tmp_path)],
        300, cwd=source)
    (sdist,) = tmp_path.glob("rdpbalancer-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"rdpbalancer/admin/static/dashboard.js", "rdpbalancer/admin/static/dashboard.css",
            "config.example.toml", "README.md", "contrib/rdpbalancer.service"} <= names


def test_installed_package_is_the_one_that_runs(venv: Path, tmp_path: Path) -> None:
    out = run([str(venv / "bin" / "python"), "-c", "import rdpbalancer; print(rdpbalancer.__file__)"], 60,
              cwd=outside(tmp_path), env=clean_env())
    assert Path(out.stdout.strip()).is_relative_to(venv)
    version = run([str(venv / "bin" / "rdpbalancer"), "--version"], 60, cwd=tmp_path, env=clean_env())
    assert version.stdout.strip() == f"rdpbalancer {project_version()}"


def test_check_config_of_the_example(venv: Path, tmp_path: Path) -> None:
    out = run([str(venv / "bin" / "rdpbalancer"), "check-config", "-c", str(ROOT / "config.example.toml")], 60,
              cwd=outside(tmp_path), env=clean_env())
    assert ": OK; pools:" in out.stdout


async def test_installed_balancer_serves_dashboard_metrics_routes_and_ctl(
        venv: Path, tmp_path: Path, fixed_port: Callable[[], int]) -> None:
    farm = await start_farm("TS01", "TS02")
    admin_port = fixed_port()  # written in the config: `ctl -c` reads the API's address there
    config = tmp_path / "rdpb.toml"
    config.write_text(farm_config([(s.name, s.address, 1) for s in farm], tmp_path / "sticky.db")
                      .replace('[admin]\nlisten = "127.0.0.1:0"', f'[admin]\nlisten = "127.0.0.1:{admin_port}"'))
    proc = BalancerProcess(config, 0, tmp_path / "rdpb.log", program=[str(venv / "bin" / "rdpbalancer")],
                           cwd=outside(tmp_path), env=clean_env())  # on port 0: the port is read from its log
    await asyncio.to_thread(proc.start)
    port = proc.port
    try:
        await wait_for_api(admin_port)
        base = f"http://127.0.0.1:{admin_port}"
        pages = await fetch_dashboard(base)
        assert set(pages) >= {"/", "/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"}
        for path, (status, body) in pages.items():
            assert status == 200 and body, path
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
                assert resp.status == 200
            async with http.get(f"{base}/api/v1/openapi.json") as resp:
                spec = await resp.json()  # the dashboard's header shows this version
        assert f'rdpbalancer_build_info{{version="{project_version()}"}} 1.0' in metrics
        assert spec["info"]["version"] == project_version()

        assert await where(port, "alice") in ("TS01", "TS02")

        ctl = await asyncio.create_subprocess_exec(
            str(venv / "bin" / "rdpbalancer"), "ctl", "-c", str(config), "--json", "sticky", "get", "alice",
            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(ctl.communicate(), 60)
        assert ctl.returncode == 0, err.decode()
        assert json.loads(out)["server"] in ("TS01", "TS02")
    finally:
        proc.stop()
        for server in farm:
            await server.stop()
    assert "Traceback" not in (tmp_path / "rdpb.log").read_text()


def test_installed_demo_runs(venv: Path, tmp_path: Path) -> None:
    out = run([str(venv / "bin" / "rdpbalancer"), "demo", "--duration", "5", "--port", "0", "--admin-port", "0"],
              60, cwd=outside(tmp_path), env=clean_env())
    text = out.stdout + out.stderr
    assert "logs on  -> TS0" in text, text[-3000:]
    assert "Traceback" not in text


async def test_workers_and_a_handoff_run_the_installed_code_whatever_the_folder(
        venv: Path, tmp_path: Path, fixed_port: Callable[[], int]) -> None:
    """Workers and a handoff's successor are `python -m rdpbalancer ...` again: started from a
    folder holding another `rdpbalancer` package (a source checkout), they must still run the
    installed one, as their parent does."""
    decoy = outside(tmp_path)
    (decoy / "rdpbalancer").mkdir()
    (decoy / "rdpbalancer" / "__init__.py").write_text("raise SystemExit('the decoy package was imported')\n")
    (decoy / "rdpbalancer" / "__main__.py").write_text("raise SystemExit('the decoy package was imported')\n")
    farm = await start_farm("TS01")
    admin_port = fixed_port()  # the successor opens the API where the config says, where the test looks
    config = tmp_path / "rdpb.toml"
    config.write_text(farm_config([("TS01", farm[0].address, 1)], tmp_path / "sticky.db", balancer_extra="workers = 2")
                      .replace('[admin]\nlisten = "127.0.0.1:0"', f'[admin]\nlisten = "127.0.0.1:{admin_port}"'))
    log = tmp_path / "rdpb.log"
    proc = BalancerProcess(config, 0, log, program=[str(venv / "bin" / "rdpbalancer")], cwd=decoy,
                           env=clean_env())  # on port 0: the port is read from its log (the successor keeps it)
    await asyncio.to_thread(proc.start)
    port = proc.port
    new_pid = None
    try:
        await wait_for_api(admin_port)
        # logged in the same step of the loop that starts taking signals
        await wait_until(lambda: " listening on " in log.read_text(), 15)
        assert proc.proc is not None
        old_pid = proc.proc.pid
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{admin_port}/api/v1/workers") as resp:
                workers = (await resp.json())["workers"]
            assert [w["alive"] for w in workers] == [True, True]
            proc.proc.send_signal(signal.SIGUSR2)
            await asyncio.to_thread(proc.proc.wait, 30)  # the old process leaves: no session to finish
            proc.proc = None
            async with http.get(f"http://127.0.0.1:{admin_port}/api/v1/workers") as resp:
                workers = (await resp.json())["workers"]
        new_pid = workers[0]["pid"]
        assert new_pid != old_pid and [w["alive"] for w in workers] == [True, True]
        assert await where(port, "alice") == "TS01"
    finally:
        proc.stop()
        if new_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(new_pid), signal.SIGTERM)
            await wait_until(lambda: process_gone(int(new_pid)), 15)
        for server in farm:
            await server.stop()
    text = log.read_text()
    assert "handoff: took over the listeners" in text and "decoy" not in text, text[-3000:]
