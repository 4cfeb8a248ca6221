import pytest

from rdpbalancer.policy.identity import decode_cookie, printable, source_ip_key, user_key


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
