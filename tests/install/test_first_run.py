"""The README's first command on this machine's Debian Python (PEP 668 "externally managed"):
scripts/install.sh makes a venv, installs the checkout into it, the installed command runs the demo
(simulated hosts and users on loopback, SQLite state) and starts the example configuration (moved
to loopback) without a warning."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.balancer import BalancerProcess
from tests.support.packaging import ROOT, project_version, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # pip may download every dependency

DEBIAN_PYTHON = "/usr/bin/python3"  # Debian 12's own interpreter, which refuses `pip install` outside a venv
README_FIRST_COMMAND = "bash scripts/install.sh && rdpbalancer demo"


def test_readme_opens_with_the_command_tested_here() -> None:
    assert README_FIRST_COMMAND in (ROOT / "README.md").read_text()


def test_debian_python_refuses_a_system_wide_install() -> None:
    """The premise: without a venv, the README's command would fail on Debian 12."""
    assert Path(DEBIAN_PYTHON).exists(), "Debian's python3 is part of every Debian 12 system"
    out = subprocess.run([DEBIAN_PYTHON, "-m", "pip", "install", "--dry-run", "rdpbalancer"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode != 0
    assert "externally-managed-environment" in out.stderr or "No module named pip" in out.stderr


def test_install_script_then_the_example_starts_quietly(tmp_path: Path) -> None:
    prefix = tmp_path / "opt-rdpbalancer"
    out = run(["bash", str(ROOT / "scripts" / "install.sh"), "--prefix", str(prefix), "--no-link"], 900,
              env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": DEBIAN_PYTHON, "HOME": str(Path.home())})
    assert f"installed rdpbalancer {project_version()}" in out.stdout
    rdpbalancer = prefix / "bin" / "rdpbalancer"
    assert run([str(rdpbalancer), "check-config", "-c", str(ROOT / "config.example.toml")], 60).returncode == 0

    # the example as it is, but on loopback and port 0 (the port is read from its log), with its state in tmp_path
    example = (ROOT / "config.example.toml").read_text()
    config = re.sub(r'(?m)^listen = \["0\.0\.0\.0:3389"\]', 'listen = ["127.0.0.1:0"]', example)
    config = config.replace('path = "/var/lib/rdpbalancer/sticky.db"', f'path = "{tmp_path / "sticky.db"}"')
    config = config.replace('listen = "127.0.0.1:9000"', 'listen = "127.0.0.1:0"')
    config = config.replace("172.16.50.", "127.0.50.")  # its servers' probes stay on loopback (refused there)
    assert config != example
    (tmp_path / "config.toml").write_text(config)
    log = tmp_path / "run.log"
    proc = BalancerProcess(tmp_path / "config.toml", 0, log, program=[str(rdpbalancer)], cwd=tmp_path)
    proc.start()
    try:
        assert proc.signal(signal.SIGTERM) == 0
    finally:
        proc.stop()
    text = log.read_text()
    assert " WARNING " not in text and " ERROR " not in text, text
    assert "max_connections = " in text  # derived from the open-file limit, said at info level

    # the README's first command runs the demo: here for a few seconds, on ports of its choosing
    demo = run([str(rdpbalancer), "demo", "--duration", "4", "--port", "0", "--admin-port", "0"], 120, cwd=tmp_path)
    assert re.search(r"(?m)^  balancer: 127\.0\.0\.1:\d+$", demo.stdout), demo.stdout
    assert "stopping the demo" in demo.stdout + demo.stderr and "Traceback" not in demo.stdout + demo.stderr
    shutil.rmtree(prefix)
