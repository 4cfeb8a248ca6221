"""Builders reproduce the captured packets byte for byte and refuse what the parser would reject;
parse_connection_confirm rejects malformed confirms with a specific kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdpbalancer.proto import (
    HYBRID_REQUIRED_BY_SERVER,
    INCONSISTENT_FLAGS,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    SSL_CERT_NOT_ON_SERVER,
    SSL_NOT_ALLOWED_BY_SERVER,
    SSL_REQUIRED_BY_SERVER,
    SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER,
    TYPE_RDP_NEG_FAILURE,
    TYPE_RDP_NEG_RSP,
    ProtocolError,
    build_connection_confirm,
    build_connection_request,
    build_neg_failure,
    parse_connection_confirm,
    parse_connection_request,
)

VECTORS = Path(__file__).resolve().parents[1] / "data" / "x224"
SSL_HYBRID = PROTOCOL_SSL | PROTOCOL_HYBRID


def read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_constants() -> None:
    assert (PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX) == (0, 1, 2, 8)
    assert [
        SSL_REQUIRED_BY_SERVER,
        SSL_NOT_ALLOWED_BY_SERVER,
        SSL_CERT_NOT_ON_SERVER,
        INCONSISTENT_FLAGS,
        HYBRID_REQUIRED_BY_SERVER,
        SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER,
    ] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("freerdp2-cr-user-alice.bin", {"cookie": b"alice"}),
        ("freerdp2-cr-user-utf8-jose.bin", {"cookie": b"jos\xc3\xa9"}),
        ("freerdp2-cr-sec-tls-alice.bin", {"cookie": b"alice", "requested_protocols": PROTOCOL_SSL}),
        ("freerdp2-cr-sec-rdp-alice.bin", {"cookie": b"alice", "requested_protocols": None}),
        (
            "freerdp2-cr-lbinfo-tsv-sales.bin",
            {"routing_token": b"tsv://MS Terminal Services Plugin.1.Sales"},
        ),
        ("ms-rdpbcgr-4.1.1-cr-eltons.bin", {"cookie": b"eltons", "requested_protocols": PROTOCOL_RDP}),
        (
            "constructed-cr-msts-token-172.31.249.216-3389.bin",
            {
                "routing_token": b"Cookie: msts=3640205228.15629.0000",
                "requested_protocols": SSL_HYBRID | PROTOCOL_HYBRID_EX,
            },
        ),
        (
            "constructed-cr-bob-correlation-info.bin",
            {"cookie": b"bob", "correlation_id": bytes(range(1, 17))},
        ),
    ],
)
def test_build_connection_request_matches_vector(name: str, kwargs: dict[str, object]) -> None:
    assert build_connection_request(**kwargs) == read(name)  # type: ignore[arg-type]


def test_build_connection_request_defaults() -> None:
    request = parse_connection_request(build_connection_request())
    assert (request.cookie, request.routing_token) == (None, None)
    assert request.requested_protocols == SSL_HYBRID
    assert request.neg_flags == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cookie": b"a", "routing_token": b"b"},
        {"cookie": b"al\r\nice"},
        {"cookie": b"al\x00ice"},
        {"cookie": b"u" * 300},  # LI would overflow
        {"routing_token": b""},
        {"routing_token": b"Cookie: mstshash=bob"},
        {"routing_token": b"tsv://x\n"},
        {"cookie": b"a", "neg_flags": 0x08},
        {"cookie": b"a", "correlation_id": b"short"},
        {"cookie": b"a", "requested_protocols": None, "neg_flags": 1},
        {"cookie": b"a", "requested_protocols": None, "correlation_id": bytes(16)},
        {"cookie": b"a", "neg_flags": 256},
        {"cookie": b"a", "requested_protocols": 1 << 32},
        {"cookie": b"a", "requested_protocols": -1},
    ],
)
def test_build_connection_request_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_connection_request(**kwargs)  # type: ignore[arg-type]


def test_build_connection_confirm_without_negotiation() -> None:
    cc = build_connection_confirm()
    assert len(cc) == 11
    confirm = parse_connection_confirm(cc)
    assert (confirm.neg_type, confirm.selected_protocol, confirm.flags) == (None, None, None)
    # xrdp's answer differs only in its arbitrary SRC-REF (0x1234)
    xrdp = read("xrdp-cc-sec-rdp-no-nego.bin")
    assert cc[:8] + cc[10:] == xrdp[:8] + xrdp[10:]


def test_build_connection_confirm_matches_shadow_vector() -> None:
    assert build_connection_confirm(PROTOCOL_SSL, flags=0x03) == read("shadow-cc-default.bin")
    assert build_connection_confirm(PROTOCOL_RDP, flags=0x03) == read("shadow-cc-sec-rdp.bin")


@pytest.mark.parametrize("protocol", [PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX])
def test_build_connection_confirm_round_trip(protocol: int) -> None:
    confirm = parse_connection_confirm(build_connection_confirm(protocol, flags=0x01))
    assert (confirm.neg_type, confirm.selected_protocol, confirm.flags) == (TYPE_RDP_NEG_RSP, protocol, 1)
    assert confirm.failure_code is None


@pytest.mark.parametrize("code", range(1, 7))
def test_build_neg_failure_round_trip(code: int) -> None:
    packet = build_neg_failure(code)
    assert len(packet) == 19
    confirm = parse_connection_confirm(packet)
    assert (confirm.neg_type, confirm.failure_code, confirm.flags) == (TYPE_RDP_NEG_FAILURE, code, 0)
    assert confirm.selected_protocol is None


@pytest.mark.parametrize("bad", [(-1, 0), (1 << 32, 0), (1, 256), (1, -1)])
def test_build_confirm_refuses_out_of_range(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        build_connection_confirm(*bad)


def _cc(variable: bytes, code: int = 0xD0) -> bytes:
    length = 11 + len(variable)
    return bytes([3, 0, length >> 8, length & 0xFF, length - 5, code, 0, 0, 0, 0, 0]) + variable


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "truncated"),
        (read("xrdp-cc-default-ssl.bin")[:-1], "truncated"),
        (read("xrdp-cc-default-ssl.bin") + b"\x00", "extra-data"),
        (b"\x16\x03\x01\x00\x05hello", "not-tpkt"),
        (build_connection_request(cookie=b"alice"), "not-connection-confirm"),
        (_cc(b"\x02\x01\x08\x00\x01\x00\x00"), "bad-neg-rsp"),  # 7 bytes
        (_cc(b"\x02\x01\x08\x00\x01\x00\x00\x00\x00"), "bad-neg-rsp"),  # 9 bytes
        (_cc(b"\x02\x01\x09\x00\x01\x00\x00\x00"), "bad-neg-rsp"),  # length field 9
        (_cc(b"\x01\x00\x08\x00\x01\x00\x00\x00"), "bad-neg-rsp"),  # an RDP_NEG_REQ
        (
            _cc(b"\x02\x01\x08\x00\x01\x00\x00\x00")[:10] + b"\x40" + b"\x02\x01\x08\x00\x01\x00\x00\x00",
            "bad-class",
        ),
        (b"\x03\x00\x00\x41" + bytes(61), "too-large"),  # 64 is the CC cap
    ],
)
def test_parse_connection_confirm_rejects(data: bytes, kind: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_connection_confirm(data)
    assert caught.value.kind == kind
