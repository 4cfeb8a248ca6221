"""Every captured vector in tests/data/x224 through the sans-IO readers.

Connection Requests (``*-cr-*.bin``) are fed whole, one byte at a time and with
trailing bytes; Connection Confirms (``*-cc-*.bin``) go through
parse_connection_confirm and ServerHandshake. Expected values come from the
table in tests/data/x224/README.md and are cross-checked against index.jsonl.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rdpbalancer.proto import (
    NEED_DATA,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    TYPE_RDP_NEG_RSP,
    ClientHandshake,
    ConnectionConfirmReceived,
    ConnectionRequest,
    ConnectionRequestReceived,
    ProtocolError,
    ServerHandshake,
    parse_connection_confirm,
)

VECTORS = Path(__file__).resolve().parents[1] / "data" / "x224"
SSL_HYBRID = PROTOCOL_SSL | PROTOCOL_HYBRID
# What a client typically sends right after the CR once it has the CC: a TLS ClientHello prefix.
TRAILING = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(40))


@dataclass(frozen=True)
class CR:
    cookie: bytes | None
    requested_protocols: int | None = SSL_HYBRID
    routing_token: bytes | None = None
    neg_flags: int | None = 0
    correlation_id: bytes | None = None
    li_mismatch: bool = False
    msts_target: tuple[str, int] | None = None
    collection: str | None = None


EXPECTED_CR: dict[str, CR] = {
    "freerdp2-cr-user-alice.bin": CR(b"alice"),
    "freerdp2-cr-user-domain-backslash-bob.bin": CR(b"bob"),
    "freerdp2-cr-user-bob-d-domain.bin": CR(b"bob"),
    "freerdp2-cr-user-upn-bob-at-example.bin": CR(b"bob@example.com"),
    "freerdp2-cr-user-utf8-jose.bin": CR(b"jos\xc3\xa9"),
    "freerdp2-cr-user-long38.bin": CR(b"verylongusername_abcdefghij_0123456789"),
    "freerdp2-cr-user-long300.bin": CR(b"u" * 255, li_mismatch=True),
    "freerdp2-cr-lbinfo-tsv-sales.bin": CR(
        None, routing_token=b"tsv://MS Terminal Services Plugin.1.Sales", collection="Sales"
    ),
    "freerdp2-cr-sec-rdp-alice.bin": CR(b"alice", requested_protocols=None, neg_flags=None),
    "freerdp2-cr-sec-tls-alice.bin": CR(b"alice", requested_protocols=PROTOCOL_SSL),
    "freerdp2-cr-sec-nla-alice.bin": CR(b"alice"),
    "freerdp2-cr-no-user.bin": CR(b"root"),
    "ms-rdpbcgr-4.1.1-cr-eltons.bin": CR(b"eltons", requested_protocols=PROTOCOL_RDP),
    "constructed-cr-msts-token-172.31.249.216-3389.bin": CR(
        None,
        routing_token=b"Cookie: msts=3640205228.15629.0000",
        requested_protocols=SSL_HYBRID | PROTOCOL_HYBRID_EX,
        msts_target=("172.31.249.216", 3389),
    ),
    "constructed-cr-bob-correlation-info.bin": CR(b"bob", neg_flags=0x08, correlation_id=bytes(range(1, 17))),
}

# name -> (neg_type, flags, selected_protocol); None = no RDP_NEG_RSP at all
EXPECTED_CC: dict[str, tuple[int, int, int] | None] = {
    "xrdp-cc-default-ssl.bin": (TYPE_RDP_NEG_RSP, 0x01, PROTOCOL_SSL),
    "xrdp-cc-sec-tls.bin": (TYPE_RDP_NEG_RSP, 0x01, PROTOCOL_SSL),
    "xrdp-cc-sec-nla-picks-ssl.bin": (TYPE_RDP_NEG_RSP, 0x01, PROTOCOL_SSL),
    "xrdp-cc-no-user.bin": (TYPE_RDP_NEG_RSP, 0x01, PROTOCOL_SSL),
    "xrdp-cc-sec-rdp-no-nego.bin": None,
    "shadow-cc-default.bin": (TYPE_RDP_NEG_RSP, 0x03, PROTOCOL_SSL),
    "shadow-cc-sec-tls.bin": (TYPE_RDP_NEG_RSP, 0x03, PROTOCOL_SSL),
    "shadow-cc-sec-rdp.bin": (TYPE_RDP_NEG_RSP, 0x03, PROTOCOL_RDP),
    "ms-rdpbcgr-4.1.2-cc-rdp.bin": (TYPE_RDP_NEG_RSP, 0x00, PROTOCOL_RDP),
}


def read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def first_event(hs: ClientHandshake, chunks: Iterable[bytes]) -> ConnectionRequestReceived:
    """Feed chunks, calling next_event after each; the event must come with the last chunk."""
    chunk_list = list(chunks)
    for index, chunk in enumerate(chunk_list):
        hs.receive_data(chunk)
        event = hs.next_event()
        if index < len(chunk_list) - 1:
            assert event is NEED_DATA, f"event after chunk {index} of {len(chunk_list)}"
        else:
            assert isinstance(event, ConnectionRequestReceived)
            return event
    raise AssertionError("no chunks")


def assert_fields(request: ConnectionRequest, expected: CR, raw: bytes) -> None:
    assert request.raw == raw
    assert request.cookie == expected.cookie
    assert request.routing_token == expected.routing_token
    assert request.requested_protocols == expected.requested_protocols
    assert request.neg_flags == expected.neg_flags
    assert request.correlation_id == expected.correlation_id
    assert request.li_mismatch is expected.li_mismatch
    assert request.msts_target == expected.msts_target
    assert request.collection == expected.collection


def test_vector_tables_cover_every_file() -> None:
    assert {p.name for p in VECTORS.glob("*-cr-*.bin")} == set(EXPECTED_CR)
    assert {p.name for p in VECTORS.glob("*-cc-*.bin")} == set(EXPECTED_CC)


@pytest.mark.parametrize("name", sorted(EXPECTED_CR))
def test_cr_whole(name: str) -> None:
    raw = read(name)
    event = first_event(ClientHandshake(), [raw])
    assert_fields(event.request, EXPECTED_CR[name], raw)
    assert ClientHandshake().trailing_data == b""


@pytest.mark.parametrize("name", sorted(EXPECTED_CR))
def test_cr_one_byte_at_a_time(name: str) -> None:
    raw = read(name)
    hs = ClientHandshake()
    event = first_event(hs, [raw[i : i + 1] for i in range(len(raw))])
    assert_fields(event.request, EXPECTED_CR[name], raw)
    assert hs.trailing_data == b""


@pytest.mark.parametrize("name", sorted(EXPECTED_CR))
def test_cr_with_trailing_bytes_in_same_chunk(name: str) -> None:
    raw = read(name)
    hs = ClientHandshake()
    event = first_event(hs, [raw + TRAILING])
    assert_fields(event.request, EXPECTED_CR[name], raw)
    assert hs.trailing_data == TRAILING


@pytest.mark.parametrize("name", sorted(EXPECTED_CR))
def test_cr_byte_by_byte_then_trailing_keeps_every_byte(name: str) -> None:
    raw = read(name)
    stream = raw + TRAILING
    hs = ClientHandshake()
    event = first_event(hs, [stream[i : i + 1] for i in range(len(raw))])
    for i in range(len(raw), len(stream)):
        hs.receive_data(stream[i : i + 1])
    assert event.request.raw + hs.trailing_data == stream
    assert hs.next_event() is event


@pytest.mark.parametrize("name", sorted(EXPECTED_CR))
def test_cr_then_eof_still_yields_event(name: str) -> None:
    hs = ClientHandshake()
    hs.receive_data(read(name))
    hs.receive_data(b"")
    assert isinstance(hs.next_event(), ConnectionRequestReceived)


def test_long300_cookie_is_255_chars_and_li_wrapped() -> None:
    raw = read("freerdp2-cr-user-long300.bin")
    assert len(raw) == 293
    assert raw[4] == (293 - 5) & 0xFF  # LI byte 0x20: 288 wrapped
    request = first_event(ClientHandshake(), [raw]).request
    assert request.cookie is not None
    assert len(request.cookie) == 255
    assert request.li_mismatch


@pytest.mark.parametrize("name", sorted(EXPECTED_CC))
def test_cc_vectors(name: str) -> None:
    raw = read(name)
    confirm = parse_connection_confirm(raw)
    assert confirm.raw == raw
    expected = EXPECTED_CC[name]
    if expected is None:
        assert (confirm.neg_type, confirm.flags, confirm.selected_protocol) == (None, None, None)
    else:
        assert (confirm.neg_type, confirm.flags, confirm.selected_protocol) == expected
    assert confirm.failure_code is None


@pytest.mark.parametrize("name", sorted(EXPECTED_CC))
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_cc_through_server_handshake_with_trailing(name: str, chunk_size: int) -> None:
    raw = read(name)
    stream = raw + TRAILING
    hs = ServerHandshake()
    events = []
    for i in range(0, len(stream), chunk_size):
        hs.receive_data(stream[i : i + chunk_size])
        events.append(hs.next_event())
    final = events[-1]
    assert isinstance(final, ConnectionConfirmReceived)
    assert final.confirm == parse_connection_confirm(raw)
    assert final.confirm.raw + hs.trailing_data == stream


def test_xrdp_li_reject_reply_is_not_a_cc() -> None:
    raw = read("xrdp-reply-long300-li-reject.bin")
    with pytest.raises(ProtocolError) as caught:
        parse_connection_confirm(raw)
    assert caught.value.kind == "not-connection-confirm"
    hs = ServerHandshake()
    hs.receive_data(raw)
    with pytest.raises(ProtocolError) as streamed:
        hs.next_event()
    assert streamed.value.kind == "not-connection-confirm"


# --- cross-check with index.jsonl (written by the capture lab's own parser) ---


def _index() -> list[dict[str, Any]]:
    lines = (VECTORS / "index.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _hex_in_parens(text: str) -> int:
    match = re.search(r"\((0x[0-9a-fA-F]+|\d+)\)", text)
    assert match, text
    return int(match.group(1), 0)


@pytest.mark.parametrize(
    "entry", [e for e in _index() if e["parsed"]["x224"] == "CR"], ids=lambda e: e["file"]
)
def test_cr_matches_index(entry: dict[str, Any]) -> None:
    parsed = entry["parsed"]
    request = first_event(ClientHandshake(), [read(entry["file"])]).request
    # index.jsonl shows the cookie bytes as latin-1 code points ("jos\u00c3\u00a9")
    cookie = parsed["mstshash"]
    assert request.cookie == (None if cookie is None else cookie.encode("latin-1"))
    token = parsed["routing_token"]
    assert request.routing_token == (None if token is None else token.encode("latin-1"))
    assert request.li_mismatch is (not parsed["li_consistent"])
    nego = parsed["nego"]
    if nego is None:
        assert request.requested_protocols is None
    else:
        assert request.requested_protocols == _hex_in_parens(nego["requestedProtocols"])
        assert request.neg_flags == int(nego["flags"], 16)


@pytest.mark.parametrize("entry", [e for e in _index() if e["kind"] == "cc"], ids=lambda e: e["file"])
def test_cc_matches_index(entry: dict[str, Any]) -> None:
    raw = read(entry["file"])
    parsed = entry["parsed"]
    if parsed["x224"] != "CC":
        with pytest.raises(ProtocolError):
            parse_connection_confirm(raw)
        return
    confirm = parse_connection_confirm(raw)
    nego = parsed["nego"]
    if nego is None:
        assert confirm.neg_type is None
    else:
        assert confirm.selected_protocol == _hex_in_parens(nego["selectedProtocol"])
        assert confirm.flags == int(nego["flags"], 16)
