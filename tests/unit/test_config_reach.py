"""`beyond_loopback`: the Debian package's default file touches loopback only, and `run` says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdpbalancer.config import load_config
from rdpbalancer.config.reach import beyond_loopback, is_loopback, loopback_only_notice

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_POOL = '[[pool]]\nname = "p"\nservers = [{ name = "TS01", address = "127.0.0.1:3390" }]\n'


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.11", False), ("ts01.corp.example", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_the_packaged_config_touches_loopback_only_and_says_so() -> None:
    config = load_config(ROOT / "packaging" / "config.toml")
    assert beyond_loopback(config) == ()
    notice = loopback_only_notice(config)
    assert notice is not None and "only loopback" in notice and str(ROOT / "packaging" / "config.toml") in notice


def test_the_example_reaches_its_farm_and_its_listener() -> None:
    found = beyond_loopback(load_config(ROOT / "config.example.toml"))
    assert "listener 0.0.0.0:3389" in found
    assert "server TS01 172.16.50.11:3389" in found
    assert loopback_only_notice(load_config(ROOT / "config.example.toml")) is None


def test_the_default_listener_is_not_loopback(tmp_path: Path) -> None:
    assert beyond_loopback(load_config(config_file(tmp_path, LOOPBACK_POOL))) == ("listener 0.0.0.0:3389",)


@pytest.mark.parametrize(("section", "expected"), [
    ('[admin]\nlisten = "192.0.2.1:9000"\n', "admin API 192.0.2.1:9000"),
    ('[sticky]\nstore = "redis"\n[sticky.redis]\nurl = "redis://127.0.0.1:6379/0"\n', "[sticky.redis]"),
    ('[directory.ldap]\nurls = ["ldap://127.0.0.1"]\nbind_user = "u"\npassword_env = "P"\nbase_dn = "DC=x"\n',
     "[directory.ldap]"),
    ('[sessions]\nsource = "command"\ncommand = ["/bin/true", "{host}"]\n', '[sessions] source = "command"'),
])
def test_what_else_leaves_the_machine(tmp_path: Path, section: str, expected: str) -> None:
    text = f'[balancer]\nlisten = ["127.0.0.1:3389"]\n{section}{LOOPBACK_POOL}'
    assert beyond_loopback(load_config(config_file(tmp_path, text))) == (expected,)


def test_a_loopback_farm_behind_a_loopback_listener(tmp_path: Path) -> None:
    text = f'[balancer]\nlisten = ["127.0.0.1:3389", "[::1]:3389"]\n{LOOPBACK_POOL}'
    assert beyond_loopback(load_config(config_file(tmp_path, text))) == ()
