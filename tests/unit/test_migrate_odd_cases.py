"""Translation of configurations that stray from the reference setup: each odd case, and what becomes of it.

ODD is accepted by `haproxy -c` (2.6), apart from the ACL file path.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from rdpbalancer.config import parse_config
from rdpbalancer.config.compile import compile_config
from rdpbalancer.migrate import MigrationError, Translation, translate_haproxy

ODD = """\
global
    log 127.0.0.1 local0
    maxconn 4000

defaults
    mode tcp
    timeout connect 1500
    timeout client 1h
    default-server inter 5s rise 3 fall 2

frontend fe_v6
    bind :::3389 name v6
    tcp-request inspect-delay 3s
    acl admins rdp_cookie(mstshash),bytes(0,6) -m str -i -f /etc/haproxy/acl/Admins
    acl office src 10.1.0.0/16 192.168.7.1
    acl lab src 10.9.0.0/16
    acl kiosk rdp_cookie(mstshash) kiosk1 kiosk2
    acl odd hdr(host) -i example.com
    use_backend bk_admin if admins
    use_backend bk_office if office
    use_backend bk_office if admins || lab
    use_backend bk_office if !lab
    use_backend bk_office if admins office
    use_backend bk_office unless lab
    use_backend bk_kiosk if kiosk
    use_backend bk_office if odd

frontend fe_v4
    bind 10.0.0.5:3390
    default_backend bk_office

backend bk_admin
    balance roundrobin
    server a1 10.2.0.1:3389 weight 3 check
    server a2 10.2.0.2 check port 3389 disabled
    server a3 10.2.0.3:3389 check backup
    server a4 10.2.0.4:3389 maxconn 50 send-proxy

backend bk_office
    balance leastconn
    option tcp-check
    tcp-check connect port 3390
    default-server inter 10s
    stick-table type string len 20 size 2m expire 90m peers mypeers
    stick on req.rdp_cookie(mstshash)
    stick on src
    timeout connect 3s
    server o1 10.3.0.1:3389 check inter 2s on-marked-down shutdown-sessions
    server o2 10.3.0.2:3389 check
    server a1 10.3.0.3:3389 check

backend bk_kiosk
    server k1 10.4.0.1:3389
    server k2 [2001:db8::10]:3389 weight 0

backend bk_web
    mode http
    server w1 10.5.0.1:80

peers mypeers
    peer lb1 10.0.0.1:10000
"""
ADMINS = "alexander\nalexan\nbob\nCORP\\carl\n# a comment\n\n  dave \n"


@pytest.fixture
def odd(tmp_path: Path) -> tuple[Translation, dict[str, Any]]:
    (tmp_path / "Admins").write_text(ADMINS)
    translation = translate_haproxy(ODD, acl_dir=tmp_path, source_name="odd.cfg")
    return translation, tomllib.loads(translation.toml)


def comments(translation: Translation) -> str:
    """The comment text with line breaks undone, to search for sentences."""
    return " ".join(line.lstrip("# ") for line in translation.toml.splitlines() if line.lstrip().startswith("#"))


def pool(doc: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [p for p in doc["pool"] if p["name"] == name]
    return found


def test_ipv6_bind_and_a_second_frontend(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert doc["balancer"]["listen"] == ["[::]:3389", "10.0.0.5:3390"]
    assert "IPv6 wildcard usually accepted IPv4 clients too" in comments(translation)


def test_plain_number_timeouts_are_milliseconds(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert doc["balancer"]["connect_timeout"] == "3s"  # the longest of 1500ms (defaults) and 3s
    assert "bk_admin: 1500ms, bk_office: 3s, bk_kiosk: 1500ms" in comments(translation)
    assert doc["balancer"]["handshake_timeout"] == "3s"


def test_disabled_backup_and_unchecked_servers(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    servers = pool(doc, "bk_admin")["servers"]
    assert servers == [
        {"name": "a1", "address": "10.2.0.1:3389", "weight": 3},
        {"name": "a2", "address": "10.2.0.2:3389", "weight": 1, "state": "maint"},
        {"name": "a3", "address": "10.2.0.3:3389", "weight": 1, "backup": True},
        {"name": "a4", "address": "10.2.0.4:3389", "weight": 1, "check": "none", "max_sessions": 50},
    ]
    assert "backup = true: a backup takes new users only while no other server can" in comments(translation)
    assert "3389 assumed" in comments(translation)
    assert not any("maxconn 50" in u for u in translation.untranslated)  # translated now ...
    assert any("server a4 … maxconn 50 — HAProxy queued connections beyond maxconn" in d
               for d in translation.differences)  # ... with its difference in meaning listed
    assert any("server a4 … send-proxy — " in u for u in translation.untranslated)


FARM_POLICIES = """defaults
    mode tcp
    default-server slowstart 2m

backend bk_farm
    balance leastconn
    server ts1 10.6.0.1:3389 check maxconn 40
    server ts2 10.6.0.2:3389 check maxconn 0 slowstart 30s
    server spare1 10.6.0.8:3389 check backup
    server spare2 10.6.0.9:3389 check backup

backend bk_all
    option allbackups
    server x1 10.7.0.1:3389 check
    server b1 10.7.0.8:3389 check backup
    server b2 10.7.0.9:3389 check backup
"""


def test_slowstart_backup_and_maxconn_are_translated_and_their_differences_listed() -> None:
    translation = translate_haproxy(FARM_POLICIES, source_name="farm.cfg")
    doc = tomllib.loads(translation.toml)
    assert pool(doc, "bk_farm")["servers"] == [
        {"name": "ts1", "address": "10.6.0.1:3389", "weight": 1, "max_sessions": 40, "slowstart": "2m"},
        {"name": "ts2", "address": "10.6.0.2:3389", "weight": 1, "slowstart": "30s"},  # maxconn 0: no limit
        {"name": "spare1", "address": "10.6.0.8:3389", "weight": 1, "backup": True, "slowstart": "2m"},
        {"name": "spare2", "address": "10.6.0.9:3389", "weight": 1, "backup": True, "slowstart": "2m"},
    ]
    differences = "\n".join(translation.differences)
    assert "server ts1 … maxconn 40 — HAProxy queued connections beyond maxconn" in differences
    assert "server ts2 … slowstart 30s — as in HAProxy, the weight ramps" in differences
    assert "server spare1 … backup — a backup takes new users only while no other server can" in differences
    assert "server spare1 … backup (and 1 more) — HAProxy sent new users to the first backup only" in differences
    assert "server b1 … backup (and 1 more)" not in differences  # option allbackups: the same as here
    assert translation.untranslated == ["line 2: mode tcp — rdpbalancer is always a TCP proxy for RDP"]
    assert "Translated, but with a difference in meaning" in translation.toml
    windows = compile_config(parse_config(translation.toml)).policy.slowstart  # a valid configuration
    assert windows == {"ts1": 120.0, "ts2": 30.0, "spare1": 120.0, "spare2": 120.0,  # default-server slowstart 2m
                       "x1": 120.0, "b1": 120.0, "b2": 120.0}


def test_roundrobin_and_missing_balance_become_leastconn(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert {p["balance"] for p in doc["pool"]} == {"leastconn"}
    text = comments(translation)
    assert "balance roundrobin -> leastconn" in text
    assert "no balance line (HAProxy's default: roundrobin) -> leastconn" in text


def test_routes_listeners_and_conditions(odd: tuple[Translation, dict[str, Any]]) -> None:
    _, doc = odd
    assert doc["route"] == [
        {"listener": "[::]:3389", "groups": ["Admins"], "pool": "bk_admin"},
        {"listener": "[::]:3389", "sources": ["10.1.0.0/16", "192.168.7.1/32"], "pool": "bk_office"},
        {"listener": "[::]:3389", "groups": ["kiosk"], "pool": "bk_kiosk"},
        {"listener": "[::]:3389", "deny": True},  # fe_v6 has no default_backend
        {"listener": "10.0.0.5:3390", "pool": "bk_office"},
    ]
    assert doc["groups"]["kiosk"] == {"members": ["kiosk1", "kiosk2"]}


@pytest.mark.parametrize(("line", "text"), [(21, "use_backend bk_office if admins || lab"),
                                            (22, "use_backend bk_office if !lab"),
                                            (23, "use_backend bk_office if admins office"),
                                            (24, "use_backend bk_office unless lab")])
def test_complex_conditions_are_listed(odd: tuple[Translation, dict[str, Any]], line: int, text: str) -> None:
    translation, _ = odd
    [entry] = [u for u in translation.untranslated if u.startswith(f"line {line}: ")]
    assert entry.startswith(f"line {line}: {text} — only `if ACL` with one user-name or address ACL translates")


def test_unsupported_acls_are_listed_with_their_reason(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, _ = odd
    assert any(u.startswith("line 26: use_backend bk_office if odd — ACL odd: the criterion 'hdr(host)'")
               for u in translation.untranslated)
    assert any(u.startswith("line 16: acl lab src 10.9.0.0/16 — not used") for u in translation.untranslated)


def test_missing_default_backend_is_explained(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, _ = odd
    assert "frontend fe_v6 has no default_backend: HAProxy closed connections no rule matched" in comments(
        translation)


def test_acl_file_entries_that_change_meaning(odd: tuple[Translation, dict[str, Any]], tmp_path: Path) -> None:
    translation, doc = odd
    assert doc["groups"]["Admins"] == {"file": str(tmp_path / "Admins")}
    text = comments(translation)
    assert 'never matched under HAProxy (longer than 6 bytes); rdpbalancer matches them now: "alexander"' in text
    assert 'matches only the exact name: "alexan"' in text
    assert 'contain a domain: rdpbalancer strips the domain from user names, so these never match; list bare ' \
           'names: "CORP\\carl"' in text
    assert 'trailing blank): they never match: "dave "' in text
    assert "(no -i)" in text  # the kiosk ACL was case-sensitive in HAProxy


def test_sticky_from_the_one_table(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert doc["sticky"] == {"ttl": "1h30m", "max_entries": 2 << 20}
    assert doc["balancer"]["no_cookie"] == "source-ip"  # stick on src after the cookie rule
    assert "HAProxy cut keys to 20 bytes" in comments(translation)
    assert any("peers mypeers — rdpbalancer shares its sticky table" in u for u in translation.untranslated)


def test_health_per_pool_and_on_down(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert doc["health"] == {"check": "tcp", "interval": "5s", "rise": 3, "fall": 2,
                             "on_down": "shutdown-sessions"}
    assert pool(doc, "bk_office")["health"] == {"interval": "10s"}
    assert pool(doc, "bk_kiosk")["health"] == {"check": "none"}
    assert "HAProxy checked port 3390" in comments(translation)
    assert any(u.startswith("line 48: server o1 … inter 2s — ") for u in translation.untranslated)


def test_one_name_per_host_across_pools(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert [s["name"] for s in pool(doc, "bk_office")["servers"]] == ["o1", "o2", "bk_office.a1"]
    assert "a name another backend gives to 10.2.0.1:3389; renamed" in comments(translation)


def test_http_backend_and_other_sections_are_listed(odd: tuple[Translation, dict[str, Any]]) -> None:
    translation, doc = odd
    assert "bk_web" not in [p["name"] for p in doc["pool"]]
    assert any(u.startswith("line 56: backend bk_web — http mode") for u in translation.untranslated)
    assert any(u.startswith("line 58: server w1 10.5.0.1:80 — inside `backend bk_web`")
               for u in translation.untranslated)
    assert any(u.startswith("line 60: peers mypeers — peers section") for u in translation.untranslated)


def test_the_odd_translation_is_a_valid_configuration(odd: tuple[Translation, dict[str, Any]],
                                                      tmp_path: Path) -> None:
    translation, _ = odd
    config = parse_config(translation.toml, "odd.toml", base_dir=tmp_path)
    assert [p.name for p in config.pools] == ["bk_admin", "bk_office", "bk_kiosk"]


def test_a_use_backend_after_one_without_condition_is_never_reached() -> None:
    text = ("frontend f\n bind :3389\n use_backend b\n use_backend c if x\n acl x src 10.0.0.0/8\n"
            " default_backend c\nbackend b\n server s 10.0.0.1\nbackend c\n server t 10.0.0.2\n")
    translation = translate_haproxy(text)
    assert tomllib.loads(translation.toml)["route"] == [{"pool": "b"}]
    assert [u.split(" — ")[1] for u in translation.untranslated if u.startswith(("line 4:", "line 6:"))] == [
        "never reached: a `use_backend` above without a condition takes every connection"] * 2


def test_listen_section_is_a_frontend_and_a_pool() -> None:
    text = "listen rdp\n bind *:3389\n balance leastconn\n server s1 10.0.0.1:3389 check\n"
    doc = tomllib.loads(translate_haproxy(text).toml)
    assert doc["balancer"]["listen"] == ["0.0.0.0:3389"]
    assert doc["route"] == [{"pool": "rdp"}]
    assert doc["pool"][0]["servers"] == [{"name": "s1", "address": "10.0.0.1:3389", "weight": 1}]


def test_names_are_made_valid_and_strings_escaped() -> None:
    text = 'backend "bk:rdp\\"x"\n server "ts:1" 10.0.0.1\n'
    translation = translate_haproxy(text, source_name='odd "name"\n.cfg')
    doc = tomllib.loads(translation.toml)
    assert doc["pool"][0]["name"] == "bk_rdp_x"
    assert doc["pool"][0]["servers"][0]["name"] == "ts_1"
    assert translation.toml.startswith('# rdpbalancer configuration translated from odd "name"\\x0a.cfg')


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("frontend f\n bind :3389\n default_backend nowhere\n", 3, "backend 'nowhere' is not defined"),
        ("backend b\n server s1\n", 2, "server line needs a name and an address"),
        ("backend b\n server s1 10.0.0.1 weight 300\n", 2, "weight 300 is above 256"),
        ("backend b\n timeout connect 4sec\n server s1 10.0.0.1\n", 2, "invalid HAProxy time"),
        ("backend b from nodefaults\n", 1, "defaults section 'nodefaults' is not defined"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(MigrationError, match=message) as caught:
        translate_haproxy(text)
    assert caught.value.line == line


def test_a_backend_without_usable_servers_is_no_pool() -> None:
    text = ("frontend f\n bind :3389\n default_backend b\nbackend b\n server s unix@/x.sock\n"
            "backend c\n server t 10.0.0.1\n")
    translation = translate_haproxy(text)
    doc = tomllib.loads(translation.toml)
    assert [p["name"] for p in doc["pool"]] == ["c"]
    assert doc["route"] == [{"deny": True}]
    assert any(u.startswith("line 5: server s unix@/x.sock — server left out: ") for u in translation.untranslated)
    assert any(u.startswith("line 4: backend b — no pool: no usable server") for u in translation.untranslated)
