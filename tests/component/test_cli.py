"""The command line as a user runs it: real processes, real files."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rdpbalancer import __version__
from tests.support.balancer import BalancerProcess, farm_config
from tests.support.fakes import start_farm, where

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rdpbalancer", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rdpbalancer {__version__}"


def test_check_config_accepts_the_example() -> None:
    out = cli("check-config", "-c", str(ROOT / "config.example.toml"))
    assert out.returncode == 0, out.stderr
    assert "default (2 servers), accounting (2 servers), marketing (2 servers), sales (2 servers)" in out.stdout


def test_check_config_names_every_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[sticky]\nttl = "abc"\n[[pool]]\nname = "p"\nservers = [{ name = "A", address = "h:1", wieght = 2 }]\n'
    )
    out = cli("check-config", "-c", str(bad))
    assert out.returncode == 2
    assert f"{bad}: sticky.ttl: invalid duration 'abc'" in out.stderr
    assert f"{bad}: pool[0].servers[0].wieght: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_refuses_a_corrupt_sticky_file_and_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / "sticky.db"
    db.write_bytes(b"this is not a database" * 100)
    cfg = tmp_path / "c.toml"
    cfg.write_text(farm_config([("A", "127.0.0.1:1", 1)], db))
    out = cli("run", "-c", str(cfg))
    assert out.returncode == 1
    assert f"cannot open sticky table {db}" in out.stderr
    assert db.read_bytes().startswith(b"this is not a database")  # never overwritten


def test_run_names_a_listen_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(farm_config([("A", "127.0.0.1:1", 1)], tmp_path / "s.db", listen=f"127.0.0.1:{port}"))
        out = cli("run", "-c", str(cfg))
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    out = cli("run", "-c", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "nope.toml" in out.stderr



def test_json_logs_share_the_session_id_between_routed_and_end(tmp_path: Path) -> None:
    async def scenario() -> None:
        farm = await start_farm("A")
        cfg = tmp_path / "c.toml"
        cfg.write_text(farm_config([("A", farm[0].address, 1)], tmp_path / "s.db", extra='[log]\nformat = "json"\n'))
        proc = BalancerProcess(cfg, 0, tmp_path / "b.log")  # the port it took, from its start-up line
        await asyncio.to_thread(proc.start)
        try:
            assert await where(proc.port, 'al"ice') == "A"
            await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(proc.signal, signal.SIGTERM)
            await farm[0].stop()

    asyncio.run(scenario())
    events = [json.loads(line) for line in (tmp_path / "b.log").read_text().splitlines() if line.startswith("{")]
    routed = next(e for e in events if e.get("event") == "routed")
    end = next(e for e in events if e.get("event") == "end")
    assert routed["session"] == end["session"] and routed["user"] == 'al"ice' and routed["server"] == "A"
    assert end["bytes_up"] > 0 and "ts" in end and end["level"] == "info"


def run_briefly(cfg: Path, log: Path, nofile: int) -> str:
    """`run` under a hard open-file limit of `nofile` (as a container or a plain shell has), stopped
    with SIGTERM once it listens; its log."""
    with log.open("wb") as out:
        proc = subprocess.Popen(["prlimit", f"--nofile={nofile}:{nofile}", sys.executable, "-m", "rdpbalancer", "run",
                                 "-c", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while " listening on " not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    return log.read_text()


def test_defaults_do_not_warn_under_a_low_open_file_limit(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(farm_config([("A", "127.0.0.1:1", 1)], tmp_path / "s.db", limits=""))
    text = run_briefly(cfg, tmp_path / "run.log", nofile=1024)
    assert "WARNING" not in text, text
    assert "[limits] max_connections = 192 per process (from the open file limit 1024)" in text


def test_a_max_connections_the_limit_cannot_hold_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(farm_config([("A", "127.0.0.1:1", 1)], tmp_path / "s.db", limits="max_connections = 10000"))
    text = run_briefly(cfg, tmp_path / "run.log", nofile=1024)
    assert "WARNING rdpbalancer open file limit 1024 is low for [limits] max_connections = 10000" in text
