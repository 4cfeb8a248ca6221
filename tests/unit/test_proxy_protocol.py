"""PROXY protocol v1/v2 headers (rdpbalancer.proto.proxy).

Real headers captured from HAProxy 2.6 (send-proxy, send-proxy-v2, proxy-v2-options
unique-id,crc32c, a send-proxy-v2 health check) live in fuzz/corpus/proxy/ with the
Connection Request HAProxy forwarded after them; the ``built-*`` seeds there come
from the builders. Every sample is fed whole, cut at every byte, and with trailing
bytes; every malformed form must be refused with a ProxyProtocolError and a message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdpbalancer.proto import ClientHandshake, ConnectionRequestReceived, ProtocolError
from rdpbalancer.proto.builders import build_proxy_v1, build_proxy_v2
from rdpbalancer.proto.errors import (
    BAD_PROXY_V1,
    BAD_PROXY_V2,
    NOT_PROXY,
    PROXY_KINDS,
    PROXY_TOO_LARGE,
    ProxyProtocolError,
)
from rdpbalancer.proto.proxy import (
    MAX_PROXY_HEADER_BYTES,
    MAX_PROXY_V1_BYTES,
    MAX_PROXY_V2_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    looks_like_proxy_header,
    parse_proxy_header,
)

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "fuzz" / "corpus" / "proxy"
CR = (ROOT / "tests" / "data" / "x224" / "freerdp2-cr-user-alice.bin").read_bytes()
LOOPBACK4 = "127.0.0.1"

pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
fuzz = settings(derandomize=True, database=None, max_examples=400, deadline=None)


def v2(version_command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([version_command, family]) + size.to_bytes(2, "big") + block


CAPTURED: dict[str, ProxyHeader] = {
    "haproxy-2.6-v1.bin": ProxyHeader(1, (LOOPBACK4, 50906), (LOOPBACK4, 43333), 44),
    "haproxy-2.6-v1six.bin": ProxyHeader(1, ("::1", 43676), ("::1", 39289), 32),
    "haproxy-2.6-v2.bin": ProxyHeader(2, (LOOPBACK4, 37322), (LOOPBACK4, 46867), 28),
    "haproxy-2.6-v2six.bin": ProxyHeader(2, ("::1", 54792), ("::1", 32993), 52),
    # unique-id (0x05) and crc32c (0x03) TLVs after the address block
    "haproxy-2.6-v2tlv.bin": ProxyHeader(2, (LOOPBACK4, 49284), (LOOPBACK4, 34903), 84),
    # a health check: LOCAL command, family UNSPEC, no address block, nothing after
    "haproxy-2.6-v2local.bin": ProxyHeader(2, None, None, 16),
    "built-v1-unknown.bin": ProxyHeader(1, None, None, 15),
    "built-v1-unknown-worst-case.bin": ProxyHeader(1, None, None, MAX_PROXY_V1_BYTES),
    "built-v1-tcp6-max.bin": ProxyHeader(1, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), ("2001:db8::1", 0), 72),
    "built-v2-tcp6-tlvs.bin": ProxyHeader(2, ("2001:db8::7", 3389), ("2001:db8::1", 3389), 81),
    # AF_UNIX and UDP fall back to UNSPEC: accepted, no address
    "built-v2-unix-stream.bin": ProxyHeader(2, None, None, 232),
    "built-v2-udp4.bin": ProxyHeader(2, None, None, 28),
}


def test_every_seed_has_an_expectation() -> None:
    assert sorted(p.name for p in SEEDS.glob("*.bin")) == sorted(CAPTURED)


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_sample_whole_then_x224_follows(name: str) -> None:
    data = (SEEDS / name).read_bytes()
    header = parse_proxy_header(data)
    assert header == CAPTURED[name]
    rest = data[header.length :]
    assert rest in (b"", CR)  # the LOCAL health check is followed by nothing
    if rest:
        reader = ClientHandshake()
        reader.receive_data(rest)
        event = reader.next_event()
        assert isinstance(event, ConnectionRequestReceived)
        assert event.request.cookie == b"alice"


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_sample_cut_at_every_byte(name: str) -> None:
    data = (SEEDS / name).read_bytes()
    expected = CAPTURED[name]
    for cut in range(len(data) + 1):
        assert looks_like_proxy_header(data[:cut])
        got = parse_proxy_header(data[:cut])
        assert got == (expected if cut >= expected.length else None), cut


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_sample_with_trailing_bytes(name: str) -> None:
    data = (SEEDS / name).read_bytes()
    header = CAPTURED[name]
    for tail in (b"\x00", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", bytes(range(256)) * 3):
        assert parse_proxy_header(data[: header.length] + tail) == header
        assert parse_proxy_header(bytearray(data[: header.length] + tail)) == header


def test_local_command_ignores_family_and_block() -> None:
    # the spec: for LOCAL, "discard the protocol block including the family"
    data = v2(0x20, 0xFF, b"\x01\x02\x03")
    assert parse_proxy_header(data) == ProxyHeader(2, None, None, 19)


def test_v1_ipv4_mapped_and_zero_ports() -> None:
    header = parse_proxy_header(b"PROXY TCP6 ::ffff:10.0.0.1 ::1 0 65535\r\n")
    assert header is not None
    assert header.source == ("::ffff:a00:1", 0)
    assert header.destination == ("::1", 65535)


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    assert parse_proxy_header(b"PROXY UNKNOWN whatever: 1 2 3\r\nX") == ProxyHeader(1, None, None, 31)


def test_v2_header_at_the_cap() -> None:
    block = bytes(12) + b"\xe0" + (MAX_PROXY_V2_BYTES - 16 - 12 - 3).to_bytes(2, "big")
    block += bytes(MAX_PROXY_V2_BYTES - 16 - len(block))
    header = parse_proxy_header(v2(0x21, 0x11, block))
    assert header == ProxyHeader(2, ("0.0.0.0", 0), ("0.0.0.0", 0), MAX_PROXY_V2_BYTES)
    assert MAX_PROXY_HEADER_BYTES == MAX_PROXY_V2_BYTES


# --- refusals: (input, kind, words the message must contain) ---

MALFORMED: list[tuple[bytes, str, str]] = [
    (CR, NOT_PROXY, "looks like TPKT"),
    (b"\x16\x03\x01", NOT_PROXY, "TLS"),
    (b"GET / HTTP/1.1\r\n", NOT_PROXY, "GET / HT"),
    (b"proxy TCP4", NOT_PROXY, "signature"),
    (b"PROXY\r\n", NOT_PROXY, "signature"),
    (b"\r\n\r\n\x00\r\nQUIX", NOT_PROXY, "signature"),
    # v1
    (b"PROXY TCP5 ", BAD_PROXY_V1, "TCP5"),
    (b"PROXY  TCP4", BAD_PROXY_V1, "protocol"),
    (b"PROXY \r\n", BAD_PROXY_V1, "protocol"),
    (b"PROXY UNKNOWNX\r\n", BAD_PROXY_V1, "UNKNOWNX"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", BAD_PROXY_V1, "0x0a"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", BAD_PROXY_V1, "not followed by LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", BAD_PROXY_V1, "not followed by LF"),
    (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", BAD_PROXY_V1, "0x09"),
    (b"PROXY UNKNOWN \xc3\xa9\r\n", BAD_PROXY_V1, "0xc3"),
    (b"PROXY UNKNOWN " + b"x" * 200, BAD_PROXY_V1, "no CRLF in the first 107"),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", BAD_PROXY_V1, "longer than 107"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", BAD_PROXY_V1, "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", BAD_PROXY_V1, "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", BAD_PROXY_V1, "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", BAD_PROXY_V1, "single spaces"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", BAD_PROXY_V1, "source address '::1' is not an IPv4"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", BAD_PROXY_V1, "source address '1.2.3.4' is not an IPv6"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", BAD_PROXY_V1, "destination address '5.6.7.256'"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", BAD_PROXY_V1, "'01.2.3.4'"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", BAD_PROXY_V1, "'1.2.3'"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", BAD_PROXY_V1, "fe80::1%eth0"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", BAD_PROXY_V1, "source port '65536'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 03389\r\n", BAD_PROXY_V1, "destination port '03389'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", BAD_PROXY_V1, "'+1'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", BAD_PROXY_V1, "'-1'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2\r\n", BAD_PROXY_V1, "'1_0'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", BAD_PROXY_V1, "'123456'"),
    # v2
    (V2_SIGNATURE + b"\x11", BAD_PROXY_V2, "version is 1"),
    (V2_SIGNATURE + b"\x31", BAD_PROXY_V2, "version is 3"),
    (V2_SIGNATURE + b"\x22", BAD_PROXY_V2, "command is 0x2"),
    (V2_SIGNATURE + b"\x2f", BAD_PROXY_V2, "command is 0xf"),
    (V2_SIGNATURE + b"\x21\x41", BAD_PROXY_V2, "0x41"),
    (V2_SIGNATURE + b"\x21\x13", BAD_PROXY_V2, "0x13"),
    (v2(0x21, 0x11, bytes(11)), BAD_PROXY_V2, "address block is 11 bytes, family 0x11 needs 12"),
    (v2(0x21, 0x21, bytes(12)), BAD_PROXY_V2, "address block is 12 bytes, family 0x21 needs 36"),
    (v2(0x21, 0x11, bytes(12) + b"\x05\x00"), BAD_PROXY_V2, "TLV at offset 28 is cut"),
    (v2(0x21, 0x11, bytes(12) + b"\x05\x00\x04abc"), BAD_PROXY_V2, "TLV type 0x05 declares 4 bytes"),
    (v2(0x21, 0x11, b"", MAX_PROXY_V2_BYTES - 15), PROXY_TOO_LARGE, f"{MAX_PROXY_V2_BYTES + 1} bytes"),
    (v2(0x20, 0x00, b"", 0xFFFF), PROXY_TOO_LARGE, "65551 bytes"),
]


@pytest.mark.parametrize(("data", "kind", "words"), MALFORMED, ids=[repr(m[0][:40]) for m in MALFORMED])
def test_malformed_is_refused_with_a_message(data: bytes, kind: str, words: str) -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse_proxy_header(data)
    assert caught.value.kind == kind
    assert words in str(caught.value)
    assert isinstance(caught.value, ProtocolError)
    # once refused, more bytes never make it acceptable
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data + CR)


@pytest.mark.parametrize(
    "data",
    [b"\x03", b"\x16", b"G", b"PROXI", b"\r\n\r\n\x01", b"\r\x00"],
)
def test_refused_from_the_first_wrong_byte(data: bytes) -> None:
    assert not looks_like_proxy_header(data)
    with pytest.raises(ProxyProtocolError) as caught:
        parse_proxy_header(data)
    assert caught.value.kind == NOT_PROXY


def test_incomplete_prefixes_need_data() -> None:
    for data in (
        b"",
        b"P",
        b"PROXY",
        b"PROXY TC",
        b"PROXY UNKNOWN",
        b"PROXY UNKNOWN\r",
        V2_SIGNATURE[:5],
        V2_SIGNATURE + b"\x21\x11\x00",
        v2(0x21, 0x11, bytes(11), 12),
    ):
        assert parse_proxy_header(data) is None, data


def test_builders_refuse_what_the_parser_refuses() -> None:
    calls: tuple[Callable[[], bytes], ...] = (
        lambda: build_proxy_v1(("1.2.3.4", 1), None),
        lambda: build_proxy_v1(("1.2.3.4", 1), ("::1", 2)),
        lambda: build_proxy_v1(("1.2.3.4", 65536), ("1.2.3.4", 2)),
        lambda: build_proxy_v1(("fe80::1%eth0", 1), ("::1", 2)),
        lambda: build_proxy_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=((0x05, bytes(MAX_PROXY_V2_BYTES)),)),
        lambda: build_proxy_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=((0x100, b""),)),
    )
    for call in calls:
        with pytest.raises(ValueError):
            call()


# --- properties ---

endpoints = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
).flatmap(
    lambda ips: st.tuples(
        st.tuples(st.just(str(ips[0])), st.integers(0, 65535)),
        st.tuples(st.just(str(ips[1])), st.integers(0, 65535)),
    )
)
tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=5).map(tuple)


@fuzz
@given(ends=st.none() | endpoints, tlvs=tlv_lists, version=st.sampled_from([1, 2]), tail=st.binary(max_size=20))
def test_round_trip(
    ends: tuple[tuple[str, int], tuple[str, int]] | None,
    tlvs: tuple[tuple[int, bytes], ...],
    version: int,
    tail: bytes,
) -> None:
    source, destination = ends if ends is not None else (None, None)
    header = build_proxy_v1(source, destination) if version == 1 else build_proxy_v2(source, destination, tlvs=tlvs)
    parsed = parse_proxy_header(header + tail)
    assert parsed == ProxyHeader(version, source, destination, len(header))
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    mutable = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(mutable)))
        value = draw(st.integers(0, 255))
        match draw(st.sampled_from(["set", "insert", "delete"])):
            case "set" if position < len(mutable):
                mutable[position] = value
            case "insert":
                mutable.insert(position, value)
            case "delete" if position < len(mutable):
                del mutable[position]
    return bytes(mutable)


SEED_BYTES = [p.read_bytes() for p in sorted(SEEDS.glob("*.bin"))]


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    return mutate(draw, draw(st.sampled_from(SEED_BYTES)))


any_input = st.one_of(
    st.binary(max_size=600),
    mutated_seed(),
    st.binary(max_size=40).map(lambda b: b"PROXY " + b),
    st.binary(max_size=120).map(lambda b: V2_SIGNATURE + b),
)


@fuzz
@given(data=any_input)
def test_any_bytes_parse_or_proxy_protocol_error(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyProtocolError as err:
        assert err.kind in PROXY_KINDS
        assert str(err)
        verdict: object = err.kind
    else:
        verdict = header
        if header is not None:
            assert 0 < header.length <= min(len(data), MAX_PROXY_HEADER_BYTES)
            assert header.version in (1, 2)
            assert parse_proxy_header(data[: header.length]) == header
            assert looks_like_proxy_header(data)
    if not looks_like_proxy_header(data):
        assert verdict == NOT_PROXY
    # the verdict on every prefix is "need data", or the same verdict (fragmentation does not matter)
    for cut in range(len(data) + 1):
        try:
            prefix = parse_proxy_header(data[:cut])
        except ProxyProtocolError as err:
            assert err.kind == verdict
        else:
            assert prefix is None or prefix == verdict
