"""Config errors: one ConfigError, every problem listed with the dotted path of its key."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdpbalancer.config import ConfigError, parse_config
from rdpbalancer.config.loader import load_config, validate_config

POOL = """
[[pool]]
name = "default"
servers = [
  { name = "TS01", address = "172.16.50.11:3389" },
  { name = "TS02", address = "172.16.50.12:3389" },
]
"""


def errors_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.toml")
    assert caught.value.path == "config.toml"
    return caught.value.errors


def only_error(text: str) -> tuple[str, str]:
    (error,) = errors_of(text)
    return error


def test_str_has_one_line_per_error_prefixed_with_the_file() -> None:
    error = ConfigError("config.toml", [("sticky.ttl", "bad"), ("", "whole file")])
    assert str(error) == "config.toml: sticky.ttl: bad\nconfig.toml: whole file"
    assert ConfigError("c.toml", "cannot bind").errors == [("", "cannot bind")]


def test_config_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ConfigError("c.toml", [("a", "b")])))
    assert (error.path, error.errors) == ("c.toml", [("a", "b")])


# --- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("wat = 1\n" + POOL, "wat"),
        ("[healthcheck]\ninterval = '5s'\n" + POOL, "healthcheck"),
        ("pools = []\n" + POOL, "pools"),
        ("source_path = 'x'\n" + POOL, "source_path"),
        ("[balancer]\nlisten_on = []\n" + POOL, "balancer.listen_on"),
        ("[sticky]\nTTL = '1h'\n" + POOL, "sticky.TTL"),
        ("[sticky]\n'odd key' = 1\n" + POOL, 'sticky."odd key"'),
        (POOL + "balancing = 'leastconn'\n", "pool[0].balancing"),
    ],
)
def test_unknown_key_is_reported_with_its_dotted_path(text: str, key: str) -> None:
    assert only_error(text) == (key, "unknown key")


def test_unknown_key_inside_a_server_inline_table() -> None:
    text = POOL.replace('address = "172.16.50.12:3389"', 'address = "172.16.50.12:3389", wieght = 2')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.toml")
    assert str(caught.value) == "config.toml: pool[0].servers[1].wieght: unknown key"


# --- several errors at once ----------------------------------------------------------------


def test_all_errors_are_reported_together_in_file_order() -> None:
    errors = errors_of(
        """
        [balancer]
        handshake_timeout = 5
        no_cookie = "drop"
        [sticky]
        ttl = "abc"
        max_entries = 0
        [log]
        level = "verbose"
        [[pool]]
        name = "default"
        servers = [{ name = "TS01", address = "10.0.0.1:99999", weight = 300, colour = "red" }]
        """
    )
    assert errors == [
        (
            "balancer.handshake_timeout",
            'a plain number is ambiguous (seconds? milliseconds?): write the unit, e.g. "5s" or "5ms"',
        ),
        ("balancer.no_cookie", "expected one of 'source-ip', 'balance' or 'reject', got 'drop'"),
        ("sticky.ttl", "invalid duration 'abc' (examples: 500ms, 30s, 5m, 8h, 1d, 1h30m)"),
        ("sticky.max_entries", "must be at least 1, got 0"),
        ("log.level", "expected one of 'debug', 'info', 'warning' or 'error', got 'verbose'"),
        (
            "pool[0].servers[0].address",
            "invalid address '10.0.0.1:99999': port 99999 is out of range 1..65535",
        ),
        ("pool[0].servers[0].weight", "must be at most 256, got 300"),
        ("pool[0].servers[0].colour", "unknown key"),
    ]


def test_no_pydantic_wording_reaches_the_user() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("balancer = 1\nlog = []\n[sticky]\npath = 3\n[[pool]]\nservers = 'x'\n")
    text = str(caught.value)
    for leak in ("pydantic", "http", "Input should", "Value error", "BalancerSection", "model"):
        assert leak not in text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- durations in the schema ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["5", "5.5", "0", "true", "'5'", "1979-05-27"])
def test_a_duration_must_be_a_string_with_a_unit(value: str) -> None:
    key, message = only_error(f"[sticky]\nttl = {value}\n" + POOL)
    assert key == "sticky.ttl"
    assert any(
        hint in message for hint in ("write the unit", "expected a duration string", "invalid duration")
    )


def test_plain_number_message_suggests_units() -> None:
    assert "write the unit" in only_error("[balancer]\nconnect_timeout = 4\n" + POOL)[1]


@pytest.mark.parametrize(
    ("key", "value"),
    [("balancer.handshake_timeout", "0s"), ("balancer.connect_timeout", "0ms"), ("sticky.ttl", "0h")],
)
def test_zero_durations_are_rejected(key: str, value: str) -> None:
    section, name = key.split(".")
    assert only_error(f"[{section}]\n{name} = '{value}'\n" + POOL) == (
        key,
        f"duration must be greater than zero, got '{value}'",
    )


def test_handshake_timeout_is_at_most_five_minutes() -> None:
    assert parse_config("[balancer]\nhandshake_timeout = '5m'\n" + POOL).balancer.handshake_timeout == 300.0
    assert only_error("[balancer]\nhandshake_timeout = '5m1ms'\n" + POOL) == (
        "balancer.handshake_timeout",
        "duration must be at most 5m, got '5m1ms'",
    )


# --- types and ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "[balancer]\nmax_connect_attempts = 0",
            ("balancer.max_connect_attempts", "must be at least 1, got 0"),
        ),
        (
            "[balancer]\nmax_connect_attempts = '3'",
            ("balancer.max_connect_attempts", "expected an integer, got '3'"),
        ),
        (
            "[balancer]\nmax_connect_attempts = 3.0",
            ("balancer.max_connect_attempts", "expected an integer, got 3.0"),
        ),
        ("[identity]\nstrip_domain = 'yes'", ("identity.strip_domain", "expected true or false, got 'yes'")),
        ("[identity]\nstrip_domain = 1", ("identity.strip_domain", "expected true or false, got 1")),
        ("[sticky]\nsync = 'off'", ("sticky.sync", "expected one of 'full' or 'normal', got 'off'")),
        ("[sticky]\npath = ''", ("sticky.path", "expected a non-empty path string")),
        ("[log]\nformat = 'xml'", ("log.format", "expected one of 'text' or 'json', got 'xml'")),
        ("balancer = 1", ("balancer", "expected a table, got 1")),
        ("log = []", ("log", "expected a table, got an array")),
    ],
)
def test_wrong_types_and_ranges(line: str, error: tuple[str, str]) -> None:
    assert only_error(line + "\n" + POOL) == error


@pytest.mark.parametrize(
    ("listen", "error"),
    [
        ("[]", ("balancer.listen", "at least one address is required")),
        ('"0.0.0.0:3389"', ("balancer.listen", "expected an array, got '0.0.0.0:3389'")),
        (
            '["0.0.0.0"]',
            ("balancer.listen[0]", "invalid address '0.0.0.0': missing port (expected host:port)"),
        ),
        (
            '["::3389"]',
            (
                "balancer.listen[0]",
                "invalid address '::3389': put IPv6 addresses in brackets, e.g. [::1]:3389",
            ),
        ),
        ("[3389]", ("balancer.listen[0]",
                    'expected a "host:port" string or { address = "host:port", proxy_protocol = true }')),
        (
            '["0.0.0.0:3389", "[::]:3389", "0.0.0.0:3389"]',
            ("balancer.listen[2]", "duplicate listen address 0.0.0.0:3389"),
        ),
    ],
)
def test_listen_errors(listen: str, error: tuple[str, str]) -> None:
    assert only_error(f"[balancer]\nlisten = {listen}\n" + POOL) == error


def test_server_needs_name_and_address() -> None:
    assert errors_of('[[pool]]\nname = "p"\nservers = [{ weight = 1 }]\n') == [
        ("pool[0].servers[0].name", "required key is missing"),
        ("pool[0].servers[0].address", "required key is missing"),
    ]


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 65, "é"])
def test_invalid_names(name: str) -> None:
    text = POOL.replace('name = "TS01"', f'name = "{name}"')
    key, message = only_error(text)
    assert key == "pool[0].servers[0].name"
    assert message.startswith(f"invalid name {name!r}")


# --- pools and servers ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "[balancer]\n", "pool = []"])
def test_at_least_one_pool_is_required(text: str) -> None:
    assert only_error(text) == ("pool", "at least one [[pool]] section is required")


def test_missing_pool_is_reported_with_other_errors() -> None:
    assert errors_of("[log]\nlevel = 'loud'\n") == [
        ("log.level", "expected one of 'debug', 'info', 'warning' or 'error', got 'loud'"),
        ("pool", "at least one [[pool]] section is required"),
    ]


def test_single_pool_table_instead_of_array() -> None:
    assert only_error('[pool]\nname = "p"\n') == (
        "pool",
        "expected an array of tables: write [[pool]], not [pool]",
    )


def test_pool_needs_servers() -> None:
    assert errors_of('[[pool]]\nname = "a"\nservers = []\n[[pool]]\nname = "b"\n') == [
        ("pool[0].servers", "a pool needs at least one server"),
        ("pool[1].servers", "required key is missing"),
    ]


def test_duplicate_pool_names() -> None:
    assert only_error(POOL + POOL) == (
        "pool[1].name",
        "duplicate pool name 'default', already used by pool[0]",
    )


def test_duplicate_server_name_and_address_in_a_pool() -> None:
    text = POOL.replace(
        'name = "TS02", address = "172.16.50.12:3389"', 'name = "TS01", address = "172.16.50.11"'
    )
    assert errors_of(text) == [
        ("pool[0].servers[1].name", "duplicate server name 'TS01', already used by servers[0] in this pool"),
        (
            "pool[0].servers[1].address",
            "duplicate server address '172.16.50.11:3389', already used by servers[0] in this pool",
        ),
    ]


def test_duplicate_servers_are_reported_for_every_pool() -> None:
    bad = POOL.replace("172.16.50.12", "172.16.50.11")
    errors = errors_of(bad + bad.replace('"default"', '"other"'))
    assert [key for key, _ in errors] == ["pool[0].servers[1].address", "pool[1].servers[1].address"]


def test_server_name_must_mean_the_same_address_in_every_pool() -> None:
    other = '[[pool]]\nname = "other"\nservers = [{ name = "TS01", address = "172.16.50.99", weight = 5 }]\n'
    assert only_error(POOL + other) == (
        "pool[1].servers[0].address",
        "server 'TS01' is 172.16.50.99:3389 here but 172.16.50.11:3389 in pool[0].servers[0]; "
        "a name is one host",
    )


def test_one_address_must_not_have_two_names() -> None:
    other = '[[pool]]\nname = "other"\nservers = [{ name = "TS09", address = "172.16.50.12:3389" }]\n'
    assert only_error(POOL + other) == (
        "pool[1].servers[0].name",
        "172.16.50.12:3389 is named 'TS09' here but 'TS02' in pool[0].servers[1]; a host has one name",
    )


def test_same_server_in_two_pools_with_different_weights_is_fine() -> None:
    other = '[[pool]]\nname = "other"\nservers = [{ name = "TS02", address = "172.16.50.12", weight = 0 }]\n'
    config = parse_config(POOL + other)
    assert config.pools[0].servers[1].address == config.pools[1].servers[0].address


# --- files and syntax ----------------------------------------------------------------------


def test_toml_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[balancer]\nlisten = ["0.0.0.0:3389"]\nno_cookie = \n', "config.toml")
    assert str(caught.value) == "config.toml: line 3, column 13: Invalid value"


def test_toml_error_at_end_of_document() -> None:
    assert only_error("a = [1") == ("", "end of document: Unclosed array")


def test_duplicate_toml_key_is_a_syntax_error() -> None:
    key, message = only_error("[log]\nlevel = 'info'\nlevel = 'debug'\n" + POOL)
    assert (key, message.startswith("line 3, column")) == ("", True)


def test_deeply_nested_toml_is_a_config_error() -> None:
    assert only_error("a = " + "[" * 100_000)[1] == "arrays or tables nested too deeply"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == str(path)
    assert str(caught.value) == f"{path}: cannot read: [Errno 2] No such file or directory: '{path}'"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"[log]\nlevel = '\xff'\n")
    with pytest.raises(ConfigError, match=r"cannot read: not UTF-8 text \(byte 15\)"):
        load_config(path)


def test_errors_from_a_file_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[log]\nlevel = 'x'\n" + POOL, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"{path}: log.level: ")


# --- only ConfigError leaves ---------------------------------------------------------------

SECTION_KEYS = ["balancer", "identity", "sticky", "log", "pool", "x"]
FIELD_KEYS = ["listen", "ttl", "path", "servers", "name", "address", "weight"]
KEYS = st.sampled_from([*SECTION_KEYS, *FIELD_KEYS])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["5s", "0s", "TS01", "10.0.0.1:3389", "[::]:1", "default", "full", "info"]),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, TOML_VALUES, max_size=5))
def test_any_document_gives_a_config_or_a_config_error(document: dict[str, Any]) -> None:
    try:
        validate_config(document)
    except ConfigError as error:
        assert error.errors
        assert all(isinstance(key, str) and message for key, message in error.errors)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(POOL + text)
    except ConfigError as error:
        assert error.errors


def test_user_names_that_are_no_account_names_are_named() -> None:
    text = ('[groups.G]\nmembers = ["a:b"]\n[[route]]\nusers = ["x", "c\\u0000d"]\npool = "p"\n'
            '[[pool]]\nname = "p"\nservers = [{ name = "A", address = "127.0.0.1:1" }]\n')
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert "groups.G.members: 'a:b': ':' is not allowed in an account name" in str(info.value)
    assert "route[0].users: 'c\\x00d': control characters are not allowed in an account name" in str(info.value)
