"""ClientHandshake / ServerHandshake: junk rejected early with a specific kind, EOF
handling, and the state machine around the single event."""

from __future__ import annotations

import struct

import pytest

from rdpbalancer.proto import (
    MAX_CONNECTION_REQUEST_BYTES,
    NEED_DATA,
    ClientHandshake,
    ConnectionRequestReceived,
    NeedData,
    ProtocolError,
    ServerHandshake,
    build_connection_confirm,
    build_connection_request,
    parse_connection_request,
)
from rdpbalancer.proto.errors import ALL_KINDS

ALICE = build_connection_request(cookie=b"alice")
NEG_REQ = b"\x01\x00\x08\x00\x03\x00\x00\x00"
HTTP_GET = b"GET / HTTP/1.1\r\nHost: rdp.example.com\r\nUser-Agent: curl/8\r\n\r\n"
TLS_CLIENT_HELLO = bytes.fromhex("160301020001000001fc0303") + bytes(32)


def make_cr(variable: bytes, *, code: int = 0xE0, class_option: int = 0, li: int | None = None) -> bytes:
    """A hand-made CR, to build what the (validating) builder refuses to."""
    length = 11 + len(variable)
    li_byte = (length - 5) & 0xFF if li is None else li
    return struct.pack(">BBHBBHHB", 3, 0, length, li_byte, code, 0, 0, class_option) + variable


def error_kind(data: bytes, *, eof: bool = False, max_size: int = MAX_CONNECTION_REQUEST_BYTES) -> str:
    hs = ClientHandshake(max_size)
    hs.receive_data(data)
    if eof:
        hs.receive_data(b"")
    with pytest.raises(ProtocolError) as caught:
        hs.next_event()
    assert caught.value.kind in ALL_KINDS
    assert str(caught.value)  # a human message
    return caught.value.kind


def parse(data: bytes) -> ConnectionRequestReceived:
    hs = ClientHandshake()
    hs.receive_data(data)
    event = hs.next_event()
    assert isinstance(event, ConnectionRequestReceived)
    return event


# --- rejected from the first bytes, without waiting for more ---


@pytest.mark.parametrize(
    ("prefix", "kind"),
    [
        (b"G", "not-tpkt"),
        (HTTP_GET[:1], "not-tpkt"),
        (TLS_CLIENT_HELLO[:1], "not-tpkt"),
        (b"\x00", "not-tpkt"),
        (b"\x03\x01", "bad-tpkt-reserved"),
        (b"\x03\x00\xff", "too-large"),  # length >= 0xff00, known from the high byte
        (b"\x03\x00\x04\x01", "too-large"),  # 1025 > 1024
        (b"\x03\x00\x00\x00", "bad-tpkt-length"),
        (b"\x03\x00\x00\x05", "bad-tpkt-length"),
        (b"\x03\x00\x00\x2b\x26\xd0", "not-connection-request"),  # a CC sent as request
        (b"\x03\x00\x00\x2b\x26\xf0", "not-connection-request"),  # X.224 Data
        (b"\x03\x00\x00\x09\x04\xe0", "bad-tpkt-length"),  # a CR too short for its fixed part
        (b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x40", "bad-class"),  # class 4
    ],
)
def test_rejected_as_soon_as_prefix_proves_it(prefix: bytes, kind: str) -> None:
    assert error_kind(prefix) == kind


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (HTTP_GET, "not-tpkt"),
        (TLS_CLIENT_HELLO, "not-tpkt"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not-tpkt"),
        (bytes(range(256)), "not-tpkt"),
    ],
)
def test_junk_whole(data: bytes, kind: str) -> None:
    assert error_kind(data) == kind


def test_message_names_tls_and_http() -> None:
    for data, word in [(TLS_CLIENT_HELLO, "TLS"), (HTTP_GET, "HTTP")]:
        hs = ClientHandshake()
        hs.receive_data(data)
        with pytest.raises(ProtocolError, match=word):
            hs.next_event()


def test_oversized_rejected_at_header_not_after_buffering() -> None:
    hs = ClientHandshake(max_size=64)
    hs.receive_data(b"\x03\x00\x00\x41")  # 65 bytes declared
    with pytest.raises(ProtocolError) as caught:
        hs.next_event()
    assert caught.value.kind == "too-large"


def test_cap_is_inclusive() -> None:
    cr = build_connection_request(cookie=b"alice")
    assert isinstance(ClientHandshake(max_size=len(cr)).next_event(), NeedData)
    hs = ClientHandshake(max_size=len(cr))
    hs.receive_data(cr)
    assert isinstance(hs.next_event(), ConnectionRequestReceived)
    assert error_kind(cr, max_size=len(cr) - 1) == "too-large"


def test_max_size_must_fit_tpkt() -> None:
    with pytest.raises(ValueError):
        ClientHandshake(max_size=10)
    with pytest.raises(ValueError):
        ClientHandshake(max_size=0x10000)


# --- EOF ---


def test_empty_input_then_eof() -> None:
    assert error_kind(b"", eof=True) == "eof"


@pytest.mark.parametrize("cut", [1, 3, 4, 11, 20, len(ALICE) - 1])
def test_truncated_then_eof(cut: int) -> None:
    assert error_kind(ALICE[:cut], eof=True) == "truncated"


def test_need_data_until_eof() -> None:
    hs = ClientHandshake()
    assert hs.next_event() is NEED_DATA
    hs.receive_data(ALICE[:10])
    assert hs.next_event() is NEED_DATA
    hs.receive_data(b"")
    with pytest.raises(ProtocolError) as caught:
        hs.next_event()
    assert caught.value.kind == "truncated"


def test_receive_after_eof_is_a_caller_bug() -> None:
    hs = ClientHandshake()
    hs.receive_data(b"")
    with pytest.raises(RuntimeError):
        hs.receive_data(ALICE)


# --- the variable part ---


@pytest.mark.parametrize(
    ("variable", "kind"),
    [
        (b"Cookie: mstshash=alice", "bad-cookie"),  # no CRLF at all
        (b"Cookie: mstshash=alice\n" + NEG_REQ, "bad-cookie"),  # LF only
        (b"Cookie: mstshash=alice\r" + NEG_REQ, "bad-cookie"),  # CR only
        (b"Cookie: mstshash=al\x00ice\r\n" + NEG_REQ, "bad-cookie"),
        (b"Cookie: mstshash=al\nice\r\n" + NEG_REQ, "bad-cookie"),
        (b"Cookie: mstshash=al\rice\r\n" + NEG_REQ, "bad-cookie"),
        (b"Cookie: mstshash=al\tice\r\n" + NEG_REQ, "bad-cookie"),
        (b"Cookie: mstshash=al\x7fice\r\n" + NEG_REQ, "bad-cookie"),
        (b"Cookie: mstshash=alice" + NEG_REQ, "bad-cookie"),  # CRLF missing before the NEG_REQ
        (b"tsv://MS Terminal Services Plugin.1.Sales", "bad-routing-token"),
        (b"tsv://MS Terminal\x00Services\r\n", "bad-routing-token"),
        (b"\r\n" + NEG_REQ, "bad-routing-token"),  # empty line
        (b"\x02\x00\x08\x00\x03\x00\x00\x00", "bad-neg-req"),  # wrong type
        (b"\x01\x00\x09\x00\x03\x00\x00\x00", "bad-neg-req"),  # wrong length field
        (b"\x01\x00\x08\x00\x03", "bad-neg-req"),  # cut short
        (NEG_REQ + b"\x00", "bad-neg-req"),  # leftover byte
        (b"Cookie: mstshash=a\r\ntsv://x\r\n" + NEG_REQ, "bad-neg-req"),  # two lines
        (b"\x01\x08\x08\x00\x03\x00\x00\x00", "bad-correlation-info"),  # flag set, info missing
        (b"\x01\x08\x08\x00\x03\x00\x00\x00" + b"\x07\x00\x24\x00" + bytes(32), "bad-correlation-info"),
        (b"\x01\x08\x08\x00\x03\x00\x00\x00" + b"\x06\x00\x20\x00" + bytes(32), "bad-correlation-info"),
    ],
)
def test_bad_variable_part(variable: bytes, kind: str) -> None:
    assert error_kind(make_cr(variable)) == kind


def test_empty_cookie_is_no_cookie() -> None:
    request = parse(make_cr(b"Cookie: mstshash=\r\n" + NEG_REQ)).request
    assert request.cookie is None
    assert request.routing_token is None
    assert request.requested_protocols == 3


def test_cookie_keeps_any_high_bytes() -> None:
    for value in [b"jos\xe9", b"\xff\xfe\x80", "用户".encode(), b"DOMAIN\\bob"]:
        request = parse(make_cr(b"Cookie: mstshash=" + value + b"\r\n")).request
        assert request.cookie == value


def test_differently_spelled_cookie_is_kept_as_routing_token() -> None:
    request = parse(make_cr(b"cookie: MSTSHASH=bob\r\n" + NEG_REQ)).request
    assert request.cookie is None
    assert request.routing_token == b"cookie: MSTSHASH=bob"


def test_variable_part_may_be_empty() -> None:
    request = parse(make_cr(b"")).request
    assert (request.cookie, request.routing_token, request.requested_protocols) == (None, None, None)


def test_neg_req_without_cookie_and_unknown_flags_and_protocols() -> None:
    request = parse(make_cr(b"\x01\x03\x08\x00\xff\xff\xff\xff")).request
    assert request.cookie is None
    assert request.neg_flags == 0x03  # mstsc restricted-admin / redirected-auth flags are fine
    assert request.requested_protocols == 0xFFFFFFFF


def test_li_mismatch_is_reported_not_rejected() -> None:
    request = parse(make_cr(b"Cookie: mstshash=bob\r\n" + NEG_REQ, li=6)).request
    assert request.cookie == b"bob"
    assert request.li_mismatch


def test_x224_option_bits_and_references_are_not_checked() -> None:
    cr = bytearray(make_cr(b"Cookie: mstshash=bob\r\n", class_option=0x03))
    cr[6:10] = b"\x12\x34\x56\x78"
    assert parse(bytes(cr)).request.cookie == b"bob"


@pytest.mark.parametrize(
    ("code", "kind"), [(0xE1, "not-connection-request"), (0xE0 | 0x0F, "not-connection-request")]
)
def test_cr_code_must_be_exactly_e0(code: int, kind: str) -> None:
    assert error_kind(make_cr(b"", code=code)) == kind


# --- the state machine ---


def test_event_is_returned_again_and_later_data_is_trailing() -> None:
    hs = ClientHandshake()
    hs.receive_data(ALICE + b"abc")
    event = hs.next_event()
    assert isinstance(event, ConnectionRequestReceived)
    assert hs.next_event() is event
    hs.receive_data(b"def")
    hs.receive_data(b"")
    assert hs.trailing_data == b"abcdef"
    assert hs.next_event() is event


def test_error_is_sticky_and_later_data_ignored() -> None:
    hs = ClientHandshake()
    hs.receive_data(b"X")
    with pytest.raises(ProtocolError) as first:
        hs.next_event()
    hs.receive_data(ALICE)
    with pytest.raises(ProtocolError) as second:
        hs.next_event()
    assert second.value is first.value
    assert hs.trailing_data == b""


def test_trailing_data_empty_before_event() -> None:
    hs = ClientHandshake()
    hs.receive_data(ALICE[:-1])
    assert hs.next_event() is NEED_DATA
    assert hs.trailing_data == b""


def test_raw_is_exactly_the_packet() -> None:
    event = parse(ALICE + ALICE)
    assert event.request.raw == ALICE


def test_parse_connection_request_wants_exactly_one_packet() -> None:
    assert parse_connection_request(ALICE).cookie == b"alice"
    with pytest.raises(ProtocolError) as extra:
        parse_connection_request(ALICE + b"\x00")
    assert extra.value.kind == "extra-data"
    with pytest.raises(ProtocolError) as short:
        parse_connection_request(ALICE[:-1])
    assert short.value.kind == "truncated"


def test_server_handshake_rejects_a_request_and_junk() -> None:
    for data, kind in [
        (ALICE, "not-connection-confirm"),
        (HTTP_GET, "not-tpkt"),
        (b"\x03\x00\x01\x00", "too-large"),
    ]:
        hs = ServerHandshake()
        hs.receive_data(data)
        with pytest.raises(ProtocolError) as caught:
            hs.next_event()
        assert caught.value.kind == kind


def test_server_handshake_eof() -> None:
    hs = ServerHandshake()
    hs.receive_data(build_connection_confirm(1)[:5])
    hs.receive_data(b"")
    with pytest.raises(ProtocolError) as caught:
        hs.next_event()
    assert caught.value.kind == "truncated"
