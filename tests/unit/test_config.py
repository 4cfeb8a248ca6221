"""Config: defaults, value parsers (durations, host:port), paths, the shipped example."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from rdpbalancer.config import (
    BackendAddress,
    BalancerSection,
    Config,
    ConfigError,
    IdentitySection,
    ListenAddress,
    LogSection,
    PoolConfig,
    ServerConfig,
    StickySection,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_host_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[[pool]]
name = "default"
servers = [{ name = "TS01", address = "172.16.50.11" }]
"""


def test_minimal_config_takes_every_default() -> None:
    config = parse_config(MINIMAL)

    assert config.balancer.listen == (ListenAddress("0.0.0.0", 3389),)
    assert config.balancer.handshake_timeout == 5.0
    assert config.balancer.connect_timeout == 4.0
    assert config.balancer.no_cookie == "source-ip"
    assert config.balancer.max_connect_attempts == 3
    assert config.identity.strip_domain is True
    assert config.sticky.path == Path("/var/lib/rdpbalancer/sticky.db")
    assert config.sticky.ttl == 8 * 3600.0
    assert config.sticky.max_entries == 100_000
    assert config.sticky.sync == "full"
    assert config.log.level == "info"
    assert config.log.format == "text"
    (pool,) = config.pools
    assert pool.name == "default"
    assert pool.balance == "leastconn"
    assert pool.servers == (
        ServerConfig(name="TS01", address=BackendAddress("172.16.50.11", 3389), weight=1),
    )


def test_parse_config_records_the_given_path() -> None:
    assert parse_config(MINIMAL).source_path == "<string>"
    assert parse_config(MINIMAL, "x/config.toml").source_path == "x/config.toml"


@pytest.mark.parametrize(
    "model",
    [Config, BalancerSection, IdentitySection, StickySection, LogSection, PoolConfig, ServerConfig],
)
def test_every_model_is_frozen_and_forbids_unknown_keys(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True


def test_config_is_immutable() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        config.balancer.connect_timeout = 1.0  # type: ignore[misc]


def test_full_config_is_parsed_into_values() -> None:
    config = parse_config(
        """
        [balancer]
        listen = ["0.0.0.0:3389", "[::]:3390", "RDP.Example.org:3391"]
        handshake_timeout = "1m30s"
        connect_timeout = "500ms"
        no_cookie = "reject"
        max_connect_attempts = 1
        [identity]
        strip_domain = false
        [sticky]
        path = "/tmp/s.db"
        ttl = "1d"
        max_entries = 1
        sync = "normal"
        [log]
        level = "debug"
        format = "json"
        [[pool]]
        name = "a"
        balance = "leastsessions"
        servers = [{ name = "TS01", address = "[2001:db8::0001]:3390", weight = 0 }]
        [[pool]]
        name = "b"
        servers = [{ name = "TS01", address = "[2001:db8::1]:3390", weight = 256 }]
        """
    )
    assert [str(a) for a in config.balancer.listen] == ["0.0.0.0:3389", "[::]:3390", "rdp.example.org:3391"]
    assert config.balancer.listen[1].host == "::"
    assert config.balancer.handshake_timeout == 90.0
    assert config.balancer.connect_timeout == 0.5
    assert config.balancer.no_cookie == "reject"
    assert config.identity.strip_domain is False
    assert config.sticky.path == Path("/tmp/s.db")
    assert (config.sticky.ttl, config.sticky.max_entries, config.sticky.sync) == (86400.0, 1, "normal")
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert [p.balance for p in config.pools] == ["leastsessions", "leastconn"]
    # The same server in two pools, written two ways, with a weight per pool.
    assert config.pools[0].servers[0].address == config.pools[1].servers[0].address
    assert config.pools[0].servers[0].address == BackendAddress("2001:db8::1", 3390)
    assert [p.servers[0].weight for p in config.pools] == [0, 256]


def test_model_dump_gives_addresses_and_paths_back_as_strings() -> None:
    dumped = parse_config(MINIMAL).model_dump()
    assert dumped["balancer"]["listen"] == ("0.0.0.0:3389",)
    assert dumped["sticky"]["path"] == "/var/lib/rdpbalancer/sticky.db"
    assert dumped["pools"][0]["servers"][0]["address"] == "172.16.50.11:3389"


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("5m", 300.0),
        ("8h", 28800.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("0010s", 10.0),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    # "\u0665" is ARABIC-INDIC DIGIT FIVE: a digit to str.isdigit() and to re's \d.
    ["", "abc", "5", "-5s", "+5s", "5 s", " 5s", "5S", "5sec", "5m5", "s", "1.s", ".5s", "1e3s", "\u0665s"],
)
def test_parse_duration_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*\(examples: 500ms, 30s, 5m, 8h, 1d, 1h30m\)"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["30m1h", "1h1h", "500ms1s", "1m1d"])
def test_parse_duration_wants_each_unit_once_largest_first(text: str) -> None:
    with pytest.raises(ValueError, match="largest first"):
        parse_duration(text)


def test_parse_duration_rejects_infinite() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("9" * 400 + "d")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (5.0, "5s"), (300.0, "5m"), (5400.0, "1h30m"), (90061.0, "1d1h1m1s")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# --- host:port -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:3389", ("0.0.0.0", 3389)),
        ("[::]:3389", ("::", 3389)),
        ("[2001:DB8:0::1]:1", ("2001:db8::1", 1)),
        ("[fe80::1%eth0]:3389", ("fe80::1%eth0", 3389)),
        ("host.example:65535", ("host.example", 65535)),
        ("TS01.Corp.Local:3389", ("ts01.corp.local", 3389)),
        ("ts_01:3389", ("ts_01", 3389)),
        ("localhost:3389", ("localhost", 3389)),
        (" 10.0.0.1:3389 ", ("10.0.0.1", 3389)),
    ],
)
def test_parse_host_port_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.1", ("10.0.0.1", 3389)), ("[::1]", ("::1", 3389)), ("ts01", ("ts01", 3389))],
)
def test_parse_host_port_uses_the_default_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=3389) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10.0.0.1", "missing port"),
        ("10.0.0.1:", "not a number"),
        ("10.0.0.1:0", "out of range"),
        ("10.0.0.1:65536", "out of range"),
        ("10.0.0.1:999999", "not a number"),
        ("10.0.0.1:-1", "not a number"),
        ("10.0.0.1:+1", "not a number"),
        ("10.0.0.1:33 89", "not a number"),
        ("10.0.0.1:\u0663\u0663\u0668\u0669", "not a number"),
        ("::1:3389", "brackets"),
        ("::", "brackets"),
        ("[::1]3389", r"expected \[IPv6\]:port"),
        ("[::1", r"expected \[IPv6\]:port"),
        ("[10.0.0.1]:3389", "not an IPv6 address"),
        ("[host]:3389", "not an IPv6 address"),
        (":3389", "missing host"),
        ("", "missing host"),
        ("10.0.0.300:3389", "neither an IP address nor a host name"),
        ("172.16.50.011:3389", "neither an IP address nor a host name"),
        ("bad host:3389", "neither an IP address nor a host name"),
        ("-ts01:3389", "neither an IP address nor a host name"),
        ("ts01..corp:3389", "neither an IP address nor a host name"),
        ("*:3389", "neither an IP address nor a host name"),
        ("a" * 64 + ":3389", "neither an IP address nor a host name"),
    ],
)
def test_parse_host_port_rejects(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_host_port(text)


def test_address_str_brackets_ipv6() -> None:
    assert str(ListenAddress("::", 3389)) == "[::]:3389"
    assert str(BackendAddress("10.0.0.1", 3389)) == "10.0.0.1:3389"


# --- paths and files -----------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_sticky_path_is_resolved_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    _write(config_dir / "config.toml", MINIMAL + '[sticky]\npath = "state/../sticky.db"\n')
    monkeypatch.chdir(tmp_path)

    config = load_config("etc/config.toml")

    assert config.sticky.path == config_dir / "sticky.db"
    assert config.sticky.path.is_absolute()
    assert config.source_path == str(config_dir / "config.toml")


def test_absolute_sticky_path_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", MINIMAL + '[sticky]\npath = "/srv/sticky.db"\n')
    assert load_config(path).sticky.path == Path("/srv/sticky.db")


def test_parse_config_resolves_against_base_dir_or_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = MINIMAL + '[sticky]\npath = "s.db"\n'
    assert parse_config(text, base_dir=tmp_path).sticky.path == tmp_path / "s.db"
    monkeypatch.chdir(tmp_path)
    assert parse_config(text).sticky.path == Path(os.getcwd()) / "s.db"


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).pools[0].name == "default"


def test_example_config_loads() -> None:
    config = load_config(REPO_ROOT / "config.example.toml")

    assert config.balancer.listen == (ListenAddress("0.0.0.0", 3389),)
    assert config.sticky.path == Path("/var/lib/rdpbalancer/sticky.db")
    # the department layout of the HAProxy setup it replaces, as routes
    assert [p.name for p in config.pools] == ["default", "accounting", "marketing", "sales"]
    assert [(s.name, str(s.address), s.weight) for s in config.pools[0].servers] == [
        ("TS01", "172.16.50.11:3389", 10),
        ("TS02", "172.16.50.12:3389", 20),
    ]
    assert [(r.groups, r.pool) for r in config.routes] == [
        (("Accounting",), "accounting"), (("Marketing",), "marketing"), (("Sales",), "sales"), (None, "default"),
    ]


def test_example_config_states_the_defaults() -> None:
    """Every key in the example is set to its default, so the comments cannot drift."""
    example = load_config(REPO_ROOT / "config.example.toml")
    minimal = parse_config(MINIMAL)
    for section in ("balancer", "identity", "sticky", "log", "health", "admin"):
        assert getattr(example, section) == getattr(minimal, section), section
    assert example.pools[0].balance == minimal.pools[0].balance


def test_load_config_raises_only_config_error_for_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)
