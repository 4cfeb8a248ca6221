"""The command line as a user runs it: real processes, real files."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from rdpbalancer import __version__
from tests.support.balancer import farm_config

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
    assert "default (4 servers)" in out.stdout


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

