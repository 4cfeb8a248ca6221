"""msts and tsv routing tokens ([MS-RDPBCGR] 2.2.1.1, [MSFT-SDLBTS])."""

from __future__ import annotations

import pytest

from rdpbalancer.proto import (
    ClientHandshake,
    ConnectionRequest,
    ConnectionRequestReceived,
    decode_msts_token,
    encode_msts_token,
)
from rdpbalancer.proto import build_connection_request as build


def request_for(token: bytes) -> ConnectionRequest:
    hs = ClientHandshake()
    hs.receive_data(build(routing_token=token))
    event = hs.next_event()
    assert isinstance(event, ConnectionRequestReceived)
    return event.request


def test_documented_example() -> None:
    assert decode_msts_token("3640205228.15629.0000") == ("172.31.249.216", 3389)
    assert decode_msts_token(b"3640205228.15629.0000") == ("172.31.249.216", 3389)
    assert decode_msts_token(b"Cookie: msts=3640205228.15629.0000") == ("172.31.249.216", 3389)
    assert encode_msts_token("172.31.249.216", 3389) == "3640205228.15629.0000"


@pytest.mark.parametrize(
    ("host", "port"),
    [("0.0.0.1", 1), ("10.0.0.5", 3389), ("255.255.255.255", 65535), ("192.168.1.20", 13389)],
)
def test_round_trip(host: str, port: int) -> None:
    assert decode_msts_token(encode_msts_token(host, port)) == (host, port)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "3640205228",
        "3640205228.15629",
        "3640205228.15629.0000.1",
        "4294967296.15629.0000",  # address > u32
        "3640205228.65536.0000",  # port > u16
        "3640205228.0.0000",  # port 0
        "3640205228..0000",
        "3640205228.15629.",
        "-1.15629.0000",
        "+3640205228.15629.0000",
        " 3640205228.15629.0000",
        "3640205228.15_629.0000",
        "\uff13\uff16\uff14\uff10.15629.0000",  # full-width digits: int() would take them
        "36402052280000000000000.15629.0000",
        "0x12.15629.0000",
        "3640205228.15629.00x0",
        "Cookie: mstshash=bob",
        "3640205228.15629.0000\r\n",
    ],
)
def test_bad_tokens_raise_value_error(token: str) -> None:
    with pytest.raises(ValueError):
        decode_msts_token(token)


def test_non_ascii_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        decode_msts_token(b"3640205228.15629.\xff000")


@pytest.mark.parametrize(
    ("host", "port"), [("::1", 3389), ("rdp.example.com", 3389), ("10.0.0.1", 0), ("10.0.0.1", 70000)]
)
def test_encode_rejects(host: str, port: int) -> None:
    with pytest.raises(ValueError):
        encode_msts_token(host, port)


def test_msts_target_property() -> None:
    assert request_for(b"Cookie: msts=3640205228.15629.0000").msts_target == ("172.31.249.216", 3389)
    assert request_for(b"Cookie: msts=garbage").msts_target is None  # invalid: None, no exception
    assert request_for(b"Cookie: msts=3640205228.0.0000").msts_target is None
    assert request_for(b"tsv://MS Terminal Services Plugin.1.Sales").msts_target is None
    assert request_for(b"Cookie: msts=3640205228.15629.0000").collection is None


@pytest.mark.parametrize(
    ("token", "collection"),
    [
        (b"tsv://MS Terminal Services Plugin.1.Sales", "Sales"),
        (b"tsv://ms terminal services plugin.1.Sales", "Sales"),
        (b"TSV://MS TERMINAL SERVICES PLUGIN.1.Sales_2", "Sales_2"),
        (b"tsv://MS Terminal Services Plugin.1.Verk\xc3\xa4ufe", "Verkäufe"),
        (b"tsv://MS Terminal Services Plugin.1.", None),
        (b"tsv://MS Terminal Services Plugin.1.\xff\xfe", None),  # not UTF-8
        (b"tsv://MS Terminal Services Plugin.2.Sales", None),
        (b"tsv://VMResource.1.0A1B2C3D", None),
        (b"Cookie: msts=3640205228.15629.0000", None),
    ],
)
def test_collection_property(token: bytes, collection: str | None) -> None:
    assert request_for(token).collection == collection


def test_cookie_request_has_no_target_or_collection() -> None:
    hs = ClientHandshake()
    hs.receive_data(build(cookie=b"alice"))
    event = hs.next_event()
    assert isinstance(event, ConnectionRequestReceived)
    assert event.request.msts_target is None
    assert event.request.collection is None
