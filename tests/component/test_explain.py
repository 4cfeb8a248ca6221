"""`rdpbalancer explain` as a user runs it (static groups; the AD variant is in tests/directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = """
[balancer]
listen = ["0.0.0.0:3389"]
[identity]
truncated_length = 9
[sticky]
path = "{db}"
[groups.Sales]
members = ["dave", "christopher"]
[groups.Accounting]
members = ["alice", "christophe"]
[[route]]
sources = ["192.0.2.0/24"]
deny = true
[[route]]
name = "night"
time = {{ days = ["mon-fri"], hours = "22:00-06:00", timezone = "UTC" }}
pool = "default"
[[route]]
groups = ["Accounting"]
pool = "accounting"
[[route]]
groups = ["Sales"]
pool = "sales"
[[route]]
pool = "default"
[[pool]]
name = "default"
servers = [{{ name = "TS01", address = "127.0.0.1:1" }}]
[[pool]]
name = "accounting"
servers = [{{ name = "TS03", address = "127.0.0.1:3" }}]
[[pool]]
name = "sales"
servers = [{{ name = "TS07", address = "127.0.0.1:7" }}, {{ name = "TS08", address = "127.0.0.1:8" }}]
"""


def explain(tmp_path: Path, *args: str) -> str:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    out = subprocess.run([sys.executable, "-m", "rdpbalancer", "explain", "-c", str(cfg), *args],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "s.db").exists()  # explain never creates or writes the table
    return out.stdout


def test_explain_walks_the_routes(tmp_path: Path) -> None:
    out = explain(tmp_path, "--user", "CORP\\Dave", "--source", "10.1.2.3", "--at", "2026-11-25T12:00+00:00")
    assert "key dave" in out and "groups: Sales" in out
    assert "route[1] (night)" in out and "outside mon,tue,wed,thu,fri 22:00-06:00 UTC" in out
    assert "route[3]" in out and "MATCH  matched -> pool sales" in out
    assert "would try in order: TS07, TS08" in out


def test_explain_at_night_and_denied_source_and_down_server(tmp_path: Path) -> None:
    assert "pool: default" in explain(tmp_path, "--user", "dave", "--at", "2026-11-25T23:00+00:00")
    assert "decision: denied" in explain(tmp_path, "--user", "dave", "--source", "192.0.2.8")
    out = explain(tmp_path, "--user", "dave", "--at", "2026-11-25T12:00+00:00", "--down", "TS07")
    assert "would try in order: TS08" in out


def test_explain_truncated_cookie(tmp_path: Path) -> None:
    out = explain(tmp_path, "--user", "christoph", "--at", "2026-11-25T12:00+00:00")
    assert "truncated name: stands for christophe, christopher" in out
    assert "ambiguous" in out and "pool: accounting" in out


def test_explain_rejects_a_bad_time(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "s.db"))
    out = subprocess.run([sys.executable, "-m", "rdpbalancer", "explain", "-c", str(cfg), "--at", "yesterday"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2 and "--at 'yesterday'" in out.stderr
