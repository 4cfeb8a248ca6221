"""The translations of the reference configurations pass rdpbalancer's own validation (check-config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdpbalancer.config import parse_config
from rdpbalancer.migrate import translate_haproxy

DATA = Path(__file__).resolve().parents[1] / "data" / "haproxy"


@pytest.mark.parametrize("name", ["seed-basic.cfg", "seed-groups.cfg"])
def test_translation_is_a_valid_configuration(name: str, tmp_path: Path) -> None:
    translation = translate_haproxy((DATA / name).read_text(), acl_dir=DATA, source_name=name)
    config = parse_config(translation.toml, f"{name}.toml", base_dir=tmp_path)
    assert [server.name for pool in config.pools for server in pool.servers] == [f"TS0{n}" for n in range(1, 9)]
    assert config.health.check == "tcp"
    assert config.sticky.ttl == 8 * 3600


def test_groups_translation_routes_and_groups(tmp_path: Path) -> None:
    translation = translate_haproxy((DATA / "seed-groups.cfg").read_text(), acl_dir=DATA)
    config = parse_config(translation.toml, "groups.toml", base_dir=tmp_path)
    assert [(route.groups, route.pool) for route in config.routes] == [
        (("Accounting",), "Accounting_BK"), (("Marketing",), "Marketing_BK"), (("Sales",), "Sales_BK"),
        (None, "DF_RDP")]
    assert {name: group.file for name, group in config.groups.items()} == {
        name: (DATA / name).resolve() for name in ("Accounting", "Marketing", "Sales")}
