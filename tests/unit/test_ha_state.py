"""The node's place in a keepalived pair: the notify hook (contrib/keepalived) writes one word,
`[admin] ha_state_file` names it, the read model reads it for the metric and the dashboard."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rdpbalancer.admin import views
from rdpbalancer.app import Balancer
from rdpbalancer.config import ConfigError, parse_config
from rdpbalancer.view import read_ha_state
from tests.support.balancer import farm_config

HOOK = Path(__file__).resolve().parents[2] / "contrib" / "keepalived" / "keepalived-notify.sh"


def config_with(tmp_path: Path, line: str) -> str:
    text = farm_config([("TS01", "127.0.0.1:1", 1)], tmp_path / "s.db")
    return text.replace('[admin]\nlisten = "127.0.0.1:0"\n', f'[admin]\nlisten = "127.0.0.1:0"\n{line}\n', 1)


def test_the_setting_names_a_file_in_a_directory_that_exists(tmp_path: Path) -> None:
    config = parse_config(config_with(tmp_path, 'ha_state_file = "ha-state"'), str(tmp_path / "c.toml"))
    assert config.admin.ha_state_file == tmp_path / "ha-state"  # relative to the configuration file
    assert parse_config(config_with(tmp_path, "")).admin.ha_state_file is None


@pytest.mark.parametrize(("value", "says"), [
    ("{tmp}/missing/ha-state", "directory {tmp}/missing does not exist"),
    ("{tmp}", "{tmp} is a directory"),
])
def test_a_file_the_hook_could_never_write_is_refused_naming_the_key(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(tmp_path, f'ha_state_file = "{value.format(tmp=tmp_path)}"'), "c.toml")
    ((key, message),) = caught.value.errors
    assert key == "admin.ha_state_file"
    assert says.format(tmp=tmp_path) in message


@pytest.mark.parametrize(("written", "state", "role"), [
    ("master\n", "master", "active"), ("backup\n", "backup", "standby"), ("fault\n", "fault", "fault"),
    ("stop\n", "stop", "stopped"), ("MASTER", "master", "active"),
])
def test_each_word_the_hook_writes_is_a_state(tmp_path: Path, written: str, state: str, role: str) -> None:
    path = tmp_path / "ha-state"
    path.write_text(written)
    ha = read_ha_state(path)
    assert (ha.state, ha.role, ha.error) == (state, role, None)
    assert ha.since == os.stat(path).st_mtime


def test_no_file_or_another_word_is_unknown_and_says_why(tmp_path: Path) -> None:
    missing = read_ha_state(tmp_path / "ha-state")
    assert (missing.state, missing.role) == (None, "unknown")
    assert missing.error is not None and "not written yet" in missing.error
    (tmp_path / "ha-state").write_text("x" * 10_000)
    garbage = read_ha_state(tmp_path / "ha-state")
    assert garbage.role == "unknown" and garbage.error is not None and "not a VRRP state" in garbage.error
    assert len(garbage.error) < 200  # a large file is not quoted whole


@pytest.mark.processes
@pytest.mark.parametrize(("keepalived_state", "word"), [("MASTER", "master"), ("BACKUP", "backup"),
                                                        ("FAULT", "fault"), ("STOP", "stop")])
def test_the_shipped_hook_writes_what_the_balancer_reads(tmp_path: Path, keepalived_state: str, word: str) -> None:
    path = tmp_path / "ha-state"
    # keepalived runs: the configured command, then INSTANCE, the instance's name, the state, the priority
    subprocess.run(["sh", str(HOOK), str(path), "INSTANCE", "RDP", keepalived_state, "100"], check=True, timeout=10)
    assert path.read_text() == f"{word}\n"
    assert read_ha_state(path).state == word
    subprocess.run(["sh", str(HOOK), str(path), "INSTANCE", "RDP", "DELETED", "100"], check=True, timeout=10)
    assert path.read_text() == f"{word}\n"  # a state it does not know leaves the file alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ha-state"]  # no temporary file left


def test_the_metric_and_the_dashboard_show_the_state(tmp_path: Path) -> None:
    path = tmp_path / "ha-state"
    bal = Balancer(parse_config(config_with(tmp_path, f'ha_state_file = "{path}"')))
    assert 'rdpbalancer_ha_state{state="master"} 0.0' in bal.metrics.exposition().decode()
    assert views.config_status(bal.view)["ha"]["role"] == "unknown"
    path.write_text("master\n")
    text = bal.metrics.exposition().decode()
    assert 'rdpbalancer_ha_state{state="master"} 1.0' in text
    assert 'rdpbalancer_ha_state{state="backup"} 0.0' in text
    assert views.config_status(bal.view)["ha"] == {"state": "master", "role": "active",
                                                   "since": os.stat(path).st_mtime, "error": None}


def test_a_node_outside_a_pair_shows_nothing(tmp_path: Path) -> None:
    bal = Balancer(parse_config(config_with(tmp_path, "")))
    assert "rdpbalancer_ha_state" not in bal.metrics.exposition().decode()
    assert views.config_status(bal.view)["ha"] is None
