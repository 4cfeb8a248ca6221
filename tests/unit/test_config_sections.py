"""[health], per-pool/server overrides, [[route]], [groups.*] and [directory.ldap]."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rdpbalancer.config import ConfigError, parse_config
from rdpbalancer.config.compile import compile_config, derived_max_connections
from rdpbalancer.policy.model import AdminState

POOLS = """
[[pool]]
name = "default"
servers = [{ name = "TS01", address = "10.0.0.1" }, { name = "TS02", address = "10.0.0.2", check = "tcp" }]
health = { interval = "10s", rise = 5 }
[[pool]]
name = "sales"
servers = [
  { name = "TS03", address = "10.0.0.3", state = "drain" },
  { name = "TS01", address = "10.0.0.1", state = "maint" },
]
"""


def errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value)


def test_health_defaults() -> None:
    h = parse_config(POOLS).health
    assert (h.check, h.interval, h.timeout, h.rise, h.fall, h.failover_after, h.on_down) == (
        "rdp", 3.0, 2.0, 2, 3, 60.0, "keep-sessions")


@pytest.mark.parametrize(("text", "seconds"), [('"0s"', 0.0), ('"never"', math.inf), ('"90s"', 90.0)])
def test_failover_after(text: str, seconds: float) -> None:
    assert parse_config(f"[health]\nfailover_after = {text}\n" + POOLS).health.failover_after == seconds


def test_check_precedence_and_admin_states() -> None:
    snap = compile_config(parse_config('[health]\nfall = 4\ninterval = "2s"\n' + POOLS))
    specs = {s.server.name: s for s in snap.checks}
    assert len(snap.checks) == 3  # one check per host
    assert (specs["TS01"].kind, specs["TS01"].interval_s, specs["TS01"].rise, specs["TS01"].fall) == ("rdp", 10.0, 5, 4)
    assert specs["TS02"].kind == "tcp"
    assert (specs["TS03"].interval_s, specs["TS03"].rise) == (2.0, 2)
    assert snap.admin_states == {"TS01": AdminState.MAINT, "TS02": AdminState.READY, "TS03": AdminState.DRAIN}


def test_bad_health_values() -> None:
    text = errors('[health]\ncheck = "ping"\nrise = 0\nfailover_after = "soon"\n' + POOLS)
    assert "health.check" in text and "health.rise" in text and "health.failover_after" in text


def test_routes_and_groups(tmp_path: Path) -> None:
    acl = tmp_path / "Accounting"
    acl.write_text("alice\n")
    cfg = parse_config(f"""
[groups.Accounting]
file = "{acl}"
[groups.Admins]
members = ["alice"]
[[route]]
groups = ["Accounting", "Admins"]
sources = ["10.1.0.0/16", "2001:db8::/32"]
time = {{ days = ["mon-fri"], hours = "22:00-06:00", timezone = "Europe/Paris" }}
pool = "sales"
[[route]]
collection = "Sales"
deny = true
[[route]]
pool = "default"
""" + POOLS)
    assert [r.pool for r in cfg.routes] == ["sales", None, "default"]
    assert cfg.routes[0].time is not None and cfg.routes[0].time.days == (0, 1, 2, 3, 4)
    assert cfg.routes[0].time.hours == (22 * 60, 6 * 60)
    assert cfg.routes[2].unconditional and cfg.groups["Accounting"].file == acl


def test_route_errors() -> None:
    text = errors("""
[groups.G]
members = ["x"]
[[route]]
pool = "default"
[[route]]
groups = ["Nope"]
pool = "missing"
""" + POOLS)
    # cross-checks run once every route is valid on its own
    assert "route[1]: unreachable: route[0] has no condition" in text
    assert "route[1].pool: unknown pool 'missing'" in text
    assert "route[1].groups[0]: unknown group 'Nope'" in text


def test_route_field_errors() -> None:
    text = errors("""
[[route]]
users = ["a"]
[[route]]
users = ["a"]
pool = "default"
deny = true
[[route]]
sources = ["10.0.0.1/8"]
time = { days = ["funday"], hours = "25:00-26:00", timezone = "Mars/Olympus" }
pool = "default"
""" + POOLS)
    assert "route[0]: " in text and "needs an action" in text
    assert "route[1]: " in text and "not both" in text
    assert "route[2].sources[0]" in text and "host bits set" in text
    assert "route[2].time.days" in text and "route[2].time.hours" in text and "route[2].time.timezone" in text


def test_group_needs_exactly_one_source_and_files_must_exist(tmp_path: Path) -> None:
    text = errors('[groups.A]\nmembers = ["x"]\nldap = "CN=A"\n' + POOLS)
    assert "groups.A: a group needs exactly one of" in text
    text = errors(f'[groups.B]\nfile = "{tmp_path}/nope"\n[groups.C]\nldap = "CN=C,DC=x"\n' + POOLS)
    assert f"groups.B.file: no such file: {tmp_path}/nope" in text
    assert "groups.C.ldap: an LDAP group needs a [directory.ldap] section" in text


def test_ldap_section() -> None:
    cfg = parse_config('[directory.ldap]\nurls = ["ldaps://dc1.corp.example"]\nbind_user = "svc@corp.example"\n'
                       'password_env = "LDAP_PW"\nbase_dn = "DC=corp,DC=example"\n' + POOLS)
    ldap = cfg.directory.ldap
    assert ldap is not None and ldap.refresh == 300.0 and ldap.page_size == 500
    text = errors('[directory.ldap]\nurls = ["http://x"]\nbind_user = "svc"\npassword = "hunter2"\nbase_dn = "DC=x"\n'
                  + POOLS)
    assert "directory.ldap.urls" in text and "directory.ldap.password: unknown key" in text
    text = errors('[directory.ldap]\nurls = ["ldap://x"]\nbind_user = "svc"\nbase_dn = "DC=x"\n' + POOLS)
    assert "exactly one of password_file" in text


def test_route_listener_must_be_a_listen_address() -> None:
    text = errors('[balancer]\nlisten = ["0.0.0.0:3389"]\n[[route]]\nlistener = "0.0.0.0:3390"\npool = "default"\n'
                  + POOLS)
    assert "route[0].listener: 0.0.0.0:3390 is not one of [balancer] listen" in text


@pytest.mark.parametrize(("fd_limit", "processes", "expected"), [
    (None, 1, 10_000),  # unlimited: the default
    (1_048_576, 1, 10_000),  # Docker's default: capped at the default
    (20_000, 1, 4_936),  # (20000 - 256) // 4
    (1_024, 1, 192),  # an untouched login shell: still starts, and says so
    (1_024, 2, 384),  # each worker has its own descriptors
    (100, 1, 1),  # below the reserve: one connection, not zero or a negative
])
def test_max_connections_left_out_fits_the_open_file_limit(fd_limit: int | None, processes: int,
                                                           expected: int) -> None:
    assert derived_max_connections(fd_limit, processes) == expected


def test_max_connections_set_is_kept_and_left_out_is_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rdpbalancer.config.compile.open_file_limit", lambda: 2_256)
    assert compile_config(parse_config(POOLS)).relay.limits.max_connections == 500
    set_ = parse_config("[limits]\nmax_connections = 7000\n" + POOLS)
    assert compile_config(set_).relay.limits.max_connections == 7000


FARM = """
[balancer]
slowstart = "2m"
[limits]
per_user_connections = 5
[[pool]]
name = "default"
slowstart = "30s"
servers = [
  { name = "TS01", address = "10.0.0.1" },
  { name = "TS02", address = "10.0.0.2", slowstart = "0s" },
  { name = "SPARE", address = "10.0.0.9", backup = true },
]
[[pool]]
name = "sales"
servers = [{ name = "TS03", address = "10.0.0.3" }, { name = "TS01", address = "10.0.0.1", slowstart = "45s" }]
"""


def test_farm_policies_compile_with_their_precedence() -> None:
    snap = compile_config(parse_config(FARM))
    # a server's own slowstart (wherever it is listed), else its first pool's, else [balancer]'s
    assert snap.policy.slowstart == {"TS01": 45.0, "SPARE": 30.0, "TS03": 120.0}  # TS02: "0s" is off
    assert snap.policy.per_user_connections == 5
    backups = {m.server.name: m.backup for p in snap.policy.pools for m in p.members}
    assert backups == {"TS01": False, "TS02": False, "SPARE": True, "TS03": False}


def test_farm_policies_are_off_by_default() -> None:
    snap = compile_config(parse_config(POOLS))
    assert snap.policy.slowstart == {} and snap.policy.per_user_connections is None


def test_bad_farm_policy_values_name_the_key() -> None:
    text = errors('[balancer]\nslowstart = 60\n[limits]\nper_user_connections = 0\n'
                  '[[pool]]\nname = "p"\nslowstart = "soon"\n'
                  'servers = [{ name = "A", address = "10.0.0.1", backup = "yes" }]\n')
    assert "balancer.slowstart" in text and 'e.g. "60s"' in text
    assert "limits.per_user_connections" in text
    assert "pool[0].slowstart" in text and "pool[0].servers[0].backup" in text
