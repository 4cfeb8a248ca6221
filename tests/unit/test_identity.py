import pytest

from rdpbalancer.policy.identity import admin_key, decode_cookie, is_source_key, printable, source_ip_key, user_key


@pytest.mark.parametrize(
    ("cookie", "strip", "expected"),
    [
        (b"alice", True, "alice"),
        (b"ALICE", True, "alice"),
        (b"CORP\\Bob", True, "bob"),
        (b"bob@example.com", True, "bob"),
        (b"bob@example.com", False, "bob@example.com"),
        (b"CORP\\bob", False, "corp\\bob"),
        (b"jos\xc3\xa9", True, "jos\u00e9"),  # FreeRDP: UTF-8
        (b"JOS\xc9", True, "jos\u00e9"),  # mstsc on a Western code page: cp1252 -> same key
        (b"CORP\\", True, None),
        (b"   ", True, None),
        (b"\x81\x8d", True, "\x81\x8d"),  # undefined in cp1252: latin-1, never an error
    ],
)
def test_user_key(cookie: bytes, strip: bool, expected: str | None) -> None:
    assert user_key(cookie, strip_domain=strip) == expected


def test_domain_collision_is_documented_behaviour() -> None:
    # CORP\bob and LAB\bob share one sticky entry when strip_domain is on (README: Identity)
    assert user_key(b"CORP\\bob") == user_key(b"LAB\\bob") == user_key(b"bob@lab.example")


def test_every_byte_string_decodes() -> None:
    assert len(decode_cookie(bytes(range(256)))) == 256


def test_source_ip_key_cannot_be_a_sam_account_name() -> None:
    assert source_ip_key("10.1.2.3") == "ip:10.1.2.3"


def test_printable_escapes_controls() -> None:
    assert printable('a\nb"\x1b') == 'a\\nb\\"\\x1b'


@pytest.mark.parametrize("cookie", [b"ip:127.0.0.1", b"ip:::1", b"CORP\\ip:10.0.0.1", b"a:b", b"al\x00ice",
                                    b"bob\x7f"])
def test_a_cookie_that_is_not_an_account_name_has_no_key(cookie: bytes) -> None:
    """':' and control characters are in no account name: such a cookie cannot name a source
    entry ("ip:ADDRESS") or anything else; the client counts as one without cookie."""
    assert user_key(cookie) is None
    assert user_key(cookie, strip_domain=False) is None


def test_source_keys_and_user_keys_are_disjoint() -> None:
    for host in ("127.0.0.1", "::1", "2001:db8::5"):
        assert ":" in source_ip_key(host) and is_source_key(source_ip_key(host))
    assert not is_source_key(user_key(b"iP") or "")


@pytest.mark.parametrize(("text", "expected"), [
    ("alice", "alice"), ("CORP\\Alice", "alice"), ("ip:127.0.0.1", "ip:127.0.0.1"),
    ("ip:0:0:0:0:0:0:0:1", "ip:::1"),  # the form a session uses
])
def test_admin_key(text: str, expected: str) -> None:
    assert admin_key(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("ip:banana", "ip:ADDRESS"), ("a:b", "':' is not allowed"), ("al\x00ice", "control characters"),
    ("\ud800", "control characters"), ("   ", "empty user name"), ("CORP\\", "empty user name"),
])
def test_admin_key_refuses_what_is_not_a_key(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        admin_key(text)
