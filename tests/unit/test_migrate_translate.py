"""The reference HAProxy configurations (tests/data/haproxy, copied from the farm we replace) translated."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rdpbalancer.migrate import Translation, translate_haproxy

DATA = Path(__file__).resolve().parents[1] / "data" / "haproxy"
SERVERS = [(f"TS0{n}", f"172.16.50.1{n}:3389") for n in range(1, 9)]


def translate(name: str, acl_dir: Path | None = None) -> tuple[Translation, dict[str, Any]]:
    translation = translate_haproxy((DATA / name).read_text(), acl_dir=acl_dir, source_name=name)
    return translation, tomllib.loads(translation.toml)


def test_basic_pool_servers_and_weights() -> None:
    _, doc = translate("seed-basic.cfg")
    [pool] = doc["pool"]
    assert pool["name"] == "BK_RDP"
    assert pool["balance"] == "leastconn"
    assert [(s["name"], s["address"]) for s in pool["servers"]] == SERVERS
    assert [s["weight"] for s in pool["servers"]] == [10, 20, 10, 20, 10, 10, 20, 20]
    assert all(set(s) == {"name", "address", "weight"} for s in pool["servers"])
    assert "health" not in pool


def test_basic_balancer_sticky_health_routes() -> None:
    _, doc = translate("seed-basic.cfg")
    assert doc["balancer"] == {"listen": ["0.0.0.0:3389"], "connect_timeout": "4s", "handshake_timeout": "2s",
                               "no_cookie": "balance"}
    assert doc["sticky"] == {"ttl": "8h", "max_entries": 10240}
    assert doc["health"] == {"check": "tcp", "interval": "3s", "rise": 2, "fall": 3}
    assert doc["route"] == [{"pool": "BK_RDP"}]
    assert "groups" not in doc
    assert "admin" not in doc  # a commented suggestion only


def test_basic_explains_the_two_stick_rules_and_the_stats_page() -> None:
    translation, _ = translate("seed-basic.cfg")
    text = translation.toml
    assert "first 6 characters of\n# the cookie" in text or "first 6 characters of the cookie" in text
    assert "`stick on rdp_cookie(mstshash)` (line 31) never stored anything" in text
    assert '# [admin]\n# listen = "127.0.0.1:9000"\n' in text
    assert 'check = "rdp"' in text  # the recommendation, as a comment
    assert text.startswith("# rdpbalancer configuration translated from seed-basic.cfg")


def test_basic_lists_what_it_did_not_translate() -> None:
    translation, _ = translate("seed-basic.cfg")
    untranslated = translation.untranslated
    assert any(u.startswith("line 10: option tcplog — ") for u in untranslated)
    assert any(u.startswith("line 3: daemon — ") for u in untranslated)
    assert any(u.startswith("line 4: stats socket /var/run/haproxy.sock") for u in untranslated)
    assert any(u.startswith("line 25: timeout server 5s — ") for u in untranslated)
    assert any(u.startswith("line 51: stats uri / — ") for u in untranslated)
    assert "# untranslated (lines 10, 17, 28): option tcplog — " in translation.toml
    assert "# untranslated (line 3): daemon — " in translation.toml
    lines = [int(u.split(":")[0].removeprefix("line ")) for u in untranslated]
    assert lines == sorted(lines)


def test_exactly_these_directives_translate() -> None:
    """Each directive is either translated or listed; the translated ones are exactly these."""
    translation, _ = translate("seed-groups.cfg")
    listed = {int(u.split(":")[0].removeprefix("line ")) for u in translation.untranslated}
    lines = enumerate((DATA / "seed-groups.cfg").read_text().splitlines(), start=1)
    directives = {n: line.split() for n, line in lines if line.strip() and not line.strip().startswith("#")}
    translated = {n: words for n, words in directives.items() if n not in listed and words[0] not in (
        "global", "defaults", "frontend", "backend")}
    assert {" ".join(words[:2]) if words[0] in ("option", "tcp-request") else words[0]
            for words in translated.values()} == {
        "bind", "tcp-request inspect-delay", "tcp-request content", "acl", "use_backend", "default_backend",
        "balance", "stick-table", "stick", "option tcp-check", "tcp-check", "default-server", "server"}
    assert [n for n, words in translated.items() if words[0] == "tcp-check"] == [37]  # the one that counted
    assert len(translated) == 36


def test_groups_routes_in_order() -> None:
    _, doc = translate("seed-groups.cfg")
    assert doc["route"] == [
        {"groups": ["Accounting"], "pool": "Accounting_BK"},
        {"groups": ["Marketing"], "pool": "Marketing_BK"},
        {"groups": ["Sales"], "pool": "Sales_BK"},
        {"pool": "DF_RDP"},
    ]
    assert [p["name"] for p in doc["pool"]] == ["DF_RDP", "Accounting_BK", "Marketing_BK", "Sales_BK"]
    assert [[s["name"] for s in p["servers"]] for p in doc["pool"]] == [
        ["TS01", "TS02"], ["TS03", "TS04"], ["TS05", "TS06"], ["TS07", "TS08"]]


def test_groups_without_acl_dir_keep_haproxys_paths() -> None:
    translation, doc = translate("seed-groups.cfg")
    assert doc["groups"] == {name: {"file": f"/usr/local/etc/haproxy/{name}"}
                             for name in ("Accounting", "Marketing", "Sales")}
    assert "use --acl-dir DIR" in translation.toml


def test_acl_files_missing_from_acl_dir_are_flagged(tmp_path: Path) -> None:
    translation, doc = translate("seed-groups.cfg", acl_dir=tmp_path)
    assert doc["groups"]["Sales"] == {"file": str(tmp_path / "Sales")}
    text = " ".join(line.removeprefix("# ") for line in translation.toml.splitlines())
    assert text.count("NOT FOUND there: copy it or fix this path") == 3
    assert text.count("could not read the file here (No such file or directory)") == 3


def test_groups_with_acl_dir_resolve_to_absolute_paths() -> None:
    relative = Path(os.path.relpath(DATA))
    translation, doc = translate("seed-groups.cfg", acl_dir=relative)
    for name in ("Accounting", "Marketing", "Sales"):
        path = Path(doc["groups"][name]["file"])
        assert path.is_absolute()
        assert path == (DATA / name).resolve()
    assert "checked its 2 entries: none needs attention" in translation.toml
    assert "NOT FOUND" not in translation.toml


def test_groups_explain_the_six_character_match() -> None:
    translation, _ = translate("seed-groups.cfg", acl_dir=DATA)
    text = " ".join(line.removeprefix("# ") for line in translation.toml.splitlines())
    assert text.count("HAProxy compared the first 6 characters of the mstshash cookie (ignoring case)") == 3
    assert "rdpbalancer compares whole user names, ignoring case, with the domain stripped" in text


def test_groups_sticky_and_health() -> None:
    translation, doc = translate("seed-groups.cfg")
    assert doc["sticky"] == {"ttl": "8h", "max_entries": 4 * 10240}
    assert doc["health"] == {"check": "tcp", "interval": "3s", "rise": 2, "fall": 3}
    assert "connect_timeout" not in doc["balancer"]
    assert "no `timeout connect` in HAProxy" in translation.toml
    assert any(u.startswith("line 49: tcp-check connect port 3389 — ignored by HAProxy too")
               for u in translation.untranslated)


@pytest.mark.parametrize("name", ["seed-basic.cfg", "seed-groups.cfg"])
def test_output_is_deterministic_and_tidy(name: str) -> None:
    first, _ = translate(name, acl_dir=DATA)
    second, _ = translate(name, acl_dir=DATA)
    assert first == second
    assert first.toml.endswith("\n") and not first.toml.endswith("\n\n")
    assert all(len(line) <= 100 for line in first.toml.splitlines() if line.startswith("#"))
    assert all(line == line.rstrip() for line in first.toml.splitlines())
