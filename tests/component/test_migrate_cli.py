"""`rdpbalancer migrate-haproxy` on the reference HAProxy configurations, checked end to end:
the output passes check-config, and explain routes users as the old ACL files did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "haproxy"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rdpbalancer", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def migrate(tmp_path: Path, name: str) -> Path:
    out = cli("migrate-haproxy", str(DATA / name), "--acl-dir", str(DATA))
    assert out.returncode == 0, out.stderr
    cfg = tmp_path / "rdpbalancer.toml"
    # keep the state of this test to itself
    cfg.write_text(out.stdout.replace("[sticky]\n", f'[sticky]\npath = "{tmp_path / "sticky.db"}"\n', 1))
    check = cli("check-config", "-c", str(cfg))
    assert check.returncode == 0, check.stderr
    return cfg


def pool_for(cfg: Path, user: str) -> str:
    out = cli("explain", "-c", str(cfg), "--user", user)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("decision:"))
    return line.split("pool: ")[1].split()[0]


@pytest.mark.parametrize(("user", "pool"), [
    ("alice", "Accounting_BK"), ("anna", "Accounting_BK"), ("bob", "Marketing_BK"), ("boris", "Marketing_BK"),
    ("carol", "Sales_BK"), ("dave", "Sales_BK"), ("zed", "DF_RDP"), ("CORP\\Carol", "Sales_BK"),
])
def test_groups_config_routes_as_the_acl_files_say(tmp_path: Path, user: str, pool: str) -> None:
    assert pool_for(migrate(tmp_path, "seed-groups.cfg"), user) == pool


def test_basic_config_migrates_and_checks(tmp_path: Path) -> None:
    cfg = migrate(tmp_path, "seed-basic.cfg")
    text = cfg.read_text()
    assert 'name = "BK_RDP"' in text and text.count("address = ") == 8
    assert pool_for(cfg, "alice") == "BK_RDP"
    assert "# untranslated" in text


def test_unreadable_input_is_a_clear_error(tmp_path: Path) -> None:
    out = cli("migrate-haproxy", str(tmp_path / "nope.cfg"))
    assert out.returncode == 2 and "nope.cfg" in out.stderr
