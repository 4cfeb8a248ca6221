"""HAProxy configuration syntax: words, quotes, escapes, comments, sections, and errors naming the line."""

from __future__ import annotations

import pytest

from rdpbalancer.migrate import MigrationError
from rdpbalancer.migrate.haproxy_cfg import parse_sections, split_words
from rdpbalancer.migrate.values import duration, listen_addresses, parse_size, parse_time_ms, server_address


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("    bind *:3389 name rdp", ["bind", "*:3389", "name", "rdp"]),
        ("stats realm Haproxy\\ Statistics", ["stats", "realm", "Haproxy Statistics"]),
        ("server s1 10.0.0.1:3389 # a comment", ["server", "s1", "10.0.0.1:3389"]),
        ("    #stats hide-version", []),
        ("acl x hdr(x) 'a b' \"c\\\"d\" e\\#f", ["acl", "x", "hdr(x)", "a b", 'c"d', "e#f"]),
        ("acl x path_reg ^/\\d+$", ["acl", "x", "path_reg", "^/\\d+$"]),  # unknown escapes stay as written
        ("log-format \\x41\\x42", ["log-format", "AB"]),
        ('empty ""', ["empty", ""]),
        ("\ttabs\tbetween\t", ["tabs", "between"]),
    ],
)
def test_split_words(line: str, words: list[str]) -> None:
    assert split_words(line, 1)[0] == words


def test_split_words_keeps_the_text_without_comment() -> None:
    assert split_words("   server s1 10.0.0.1:3389   # old host", 7)[1] == "server s1 10.0.0.1:3389"


@pytest.mark.parametrize(("line", "message"), [("acl x 'open", "unterminated ' quote"),
                                               ('acl x "open', 'unterminated " quote'),
                                               ("bind *:3389 \\", "backslash at the end")])
def test_bad_lines_name_their_number(line: str, message: str) -> None:
    with pytest.raises(MigrationError, match=message) as caught:
        split_words(line, 42)
    assert caught.value.line == 42
    assert str(caught.value).startswith("line 42: ")


def test_sections_and_their_directives() -> None:
    text = "global\n  daemon\n\ndefaults base\n  mode tcp\nbackend bk from base\n  server a 1.2.3.4\n"
    sections = parse_sections(text)
    assert [(s.kind, s.name, s.line) for s in sections] == [("global", None, 1), ("defaults", "base", 4),
                                                             ("backend", "bk", 6)]
    assert sections[2].from_defaults == "base"
    assert [d.words for d in sections[2].directives] == [("server", "a", "1.2.3.4")]


def test_directive_keys_include_the_sub_keyword() -> None:
    [section] = parse_sections("defaults\n option tcplog\n no option tcplog\n timeout connect 4s\n bind :1\n")
    assert [d.key for d in section.directives] == ["option tcplog", "no option tcplog", "timeout connect", "bind"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# header\n  daemon\nglobal\n", 2, "outside any section"),
        ("global\nbackend\n", 2, "backend without a name"),
        ("backend a\nbackend a\n", 2, "already used on line 1"),
        ("listen a\nbackend a\n", 2, "already used on line 1"),
        ("global\n.if defined(X)\n.endif\n", 2, "conditional blocks"),
        ("frontend f extra words\n", 1, "unexpected words"),
    ],
)
def test_structure_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(MigrationError, match=message) as caught:
        parse_sections(text)
    assert caught.value.line == line


def test_a_frontend_and_a_backend_may_share_a_name() -> None:
    assert len(parse_sections("frontend rdp\nbackend rdp\n")) == 2


def test_byte_order_mark_is_ignored() -> None:
    assert parse_sections("\ufeffglobal\n")[0].kind == "global"


@pytest.mark.parametrize(("text", "ms"), [("4s", 4000), ("500", 500), ("500ms", 500), ("250us", 0.25),
                                          ("2m", 120_000), ("8h", 28_800_000), ("1d", 86_400_000)])
def test_haproxy_times(text: str, ms: float) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(("ms", "text"), [(4000, "4s"), (500, "500ms"), (1500, "1500ms"), (5_400_000, "1h30m"),
                                          (0.25, "1ms"), (86_400_000, "1d")])
def test_durations_in_rdpbalancer_spelling(ms: float, text: str) -> None:
    assert duration(ms) == text


@pytest.mark.parametrize("text", ["4 s", "4sec", "-1", "", "1h30m"])
def test_bad_haproxy_times(text: str) -> None:
    with pytest.raises(ValueError, match="invalid HAProxy time"):
        parse_time_ms(text)


@pytest.mark.parametrize(("text", "size"), [("10k", 10240), ("2m", 2 << 20), ("1g", 1 << 30), ("500", 500)])
def test_table_sizes_use_binary_prefixes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("spec", "addresses"),
    [
        ("*:3389", ["0.0.0.0:3389"]),
        (":3389", ["0.0.0.0:3389"]),
        (":::3389", ["[::]:3389"]),
        ("[::]:3389", ["[::]:3389"]),
        ("ipv6@:3389", ["[::]:3389"]),
        ("10.0.0.1:3389,10.0.0.2:3390", ["10.0.0.1:3389", "10.0.0.2:3390"]),
    ],
)
def test_bind_addresses(spec: str, addresses: list[str]) -> None:
    assert listen_addresses(spec) == addresses


@pytest.mark.parametrize(("spec", "message"), [("*:3389-3390", "port ranges"), ("unix@/run/rdp.sock", "unix@"),
                                             ("/run/rdp.sock", "UNIX sockets"), ("10.0.0.1", "no port")])
def test_bind_addresses_without_equivalent(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        listen_addresses(spec)


@pytest.mark.parametrize(
    ("spec", "address", "port_missing"),
    [
        ("172.16.50.11:3389", "172.16.50.11:3389", False),
        ("172.16.50.11", "172.16.50.11:3389", True),
        ("TS01.Corp.Example:3390", "ts01.corp.example:3390", False),
        ("[2001:db8::10]:3389", "[2001:db8::10]:3389", False),
        ("ipv4@10.0.0.1:3389", "10.0.0.1:3389", False),
    ],
)
def test_server_addresses(spec: str, address: str, port_missing: bool) -> None:
    assert server_address(spec) == (address, port_missing)


@pytest.mark.parametrize("spec", ["10.0.0.1:+1", "10.0.0.1:3389-3390", "${TS1}:3389", "10.0.0.300:3389"])
def test_server_addresses_without_equivalent(spec: str) -> None:
    with pytest.raises(ValueError):
        server_address(spec)
