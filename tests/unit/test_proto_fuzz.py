"""Property tests: whatever the bytes and however they are cut, the readers return an
event, NEED_DATA or raise ProtocolError, nothing else; no byte is ever dropped; the
verdict does not depend on fragmentation; builders round-trip through the parser.

Hypothesis runs derandomized and without an example database so that CI is
deterministic (STYLE.md convention 11).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rdpbalancer.proto import (
    ClientHandshake,
    ConnectionConfirmReceived,
    ConnectionRequest,
    ConnectionRequestReceived,
    NeedData,
    ProtocolError,
    ServerHandshake,
    build_connection_request,
    decode_msts_token,
    encode_msts_token,
    parse_connection_confirm,
    parse_connection_request,
)
from rdpbalancer.proto.errors import ALL_KINDS

VECTORS = Path(__file__).resolve().parents[1] / "data" / "x224"
CR_SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*-cr-*.bin"))]
CC_SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*-cc-*.bin"))]
CONTROL = bytes(range(0x20)) + b"\x7f"
COOKIE_PREFIX = b"Cookie: mstshash="

# With warnings as errors, hypothesis' failure report trips over a DeprecationWarning from
# mypy_extensions (present because mypy is installed) and hides the falsifying example.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

fuzz = settings(derandomize=True, database=None, max_examples=400, deadline=None)
quick = settings(derandomize=True, database=None, max_examples=150, deadline=None)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "event", "need-data" or a ProtocolError kind
    event: object = None
    trailing: bytes = b""


def poll(reader: ClientHandshake | ServerHandshake) -> Outcome | None:
    try:
        event = reader.next_event()
    except ProtocolError as err:
        assert err.kind in ALL_KINDS, err.kind
        assert str(err)
        return Outcome(err.kind)
    if isinstance(event, NeedData):
        return None
    assert isinstance(event, ConnectionRequestReceived | ConnectionConfirmReceived)
    return Outcome("event", event)


def run(reader: ClientHandshake | ServerHandshake, chunks: list[bytes], eof: bool) -> Outcome:
    """Feed chunks (and EOF), calling next_event before and after each; the first verdict wins."""
    steps = [chunk for chunk in chunks if chunk]  # b"" would mean EOF
    if eof:
        steps.append(b"")
    verdict = poll(reader)
    for chunk in steps:
        reader.receive_data(chunk)
        if verdict is None:
            verdict = poll(reader)
    if verdict is None:
        return Outcome("need-data")
    if verdict.kind == "event":
        return Outcome("event", verdict.event, reader.trailing_data)
    return verdict


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)] or [data]


def raw_of(outcome: Outcome) -> bytes:
    event = outcome.event
    if isinstance(event, ConnectionRequestReceived):
        return event.request.raw
    assert isinstance(event, ConnectionConfirmReceived)
    return event.confirm.raw


def check_invariants(data: bytes, outcome: Outcome, eof: bool) -> None:
    if outcome.kind == "event":
        assert raw_of(outcome) + outcome.trailing == data  # nothing dropped, nothing invented
    if eof:
        assert outcome.kind != "need-data"


@st.composite
def mutated_cr(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CR_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        value = draw(st.integers(0, 255))
        if op == "set" and position < len(data):
            data[position] = value
        elif op == "insert":
            data.insert(position, value)
        elif op == "delete" and position < len(data):
            del data[position]
        elif op == "truncate":
            del data[position:]
    return bytes(data) + draw(st.binary(max_size=8))


inputs = st.one_of(
    st.binary(max_size=400),
    mutated_cr(),
    st.sampled_from(CR_SEEDS).flatmap(lambda cr: st.binary(max_size=16).map(lambda tail: cr + tail)),
    st.binary(max_size=64).map(lambda b: b"\x03\x00" + b),
)


@fuzz
@given(data=inputs, points=st.lists(st.integers(0, 500), max_size=12), eof=st.booleans())
def test_client_handshake_any_bytes_any_fragmentation(data: bytes, points: list[int], eof: bool) -> None:
    whole = run(ClientHandshake(), [data], eof)
    pieces = run(ClientHandshake(), cut(data, points), eof)
    event(whole.kind)  # --hypothesis-show-statistics shows how often each verdict is reached
    check_invariants(data, whole, eof)
    check_invariants(data, pieces, eof)
    assert pieces == whole
    if whole.kind == "event":
        assert isinstance(whole.event, ConnectionRequestReceived)
        assert parse_connection_request(whole.event.request.raw) == whole.event.request


@fuzz
@given(data=inputs, eof=st.booleans())
def test_client_handshake_one_byte_at_a_time(data: bytes, eof: bool) -> None:
    whole = run(ClientHandshake(), [data], eof)
    assert run(ClientHandshake(), [data[i : i + 1] for i in range(len(data))], eof) == whole


@fuzz
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(CC_SEEDS).flatmap(lambda cc: st.binary(max_size=4).map(lambda b: cc[:-2] + b)),
    ),
    points=st.lists(st.integers(0, 100), max_size=8),
    eof=st.booleans(),
)
def test_server_handshake_any_bytes(data: bytes, points: list[int], eof: bool) -> None:
    whole = run(ServerHandshake(), [data], eof)
    check_invariants(data, whole, eof)
    assert run(ServerHandshake(), cut(data, points), eof) == whole
    try:
        parse_connection_confirm(data)
    except ProtocolError as err:
        assert err.kind in ALL_KINDS


@fuzz
@given(data=st.binary(max_size=400))
def test_parse_connection_request_any_bytes(data: bytes) -> None:
    try:
        request = parse_connection_request(data)
    except ProtocolError as err:
        assert err.kind in ALL_KINDS
    else:
        assert request.raw == data


# --- builders round-trip ---

line_bytes = st.binary(min_size=1, max_size=180).map(lambda b: b.translate(None, CONTROL)).filter(bool)
protocols = st.none() | st.integers(0, 2**32 - 1)
flags = st.integers(0, 255).map(lambda f: f & ~0x08)
correlation = st.none() | st.binary(min_size=16, max_size=16)


@fuzz
@given(cookie=line_bytes, requested=protocols, neg_flags=flags, correlation_id=correlation)
def test_cookie_round_trip(
    cookie: bytes, requested: int | None, neg_flags: int, correlation_id: bytes | None
) -> None:
    if requested is None:
        neg_flags, correlation_id = 0, None
    packet = build_connection_request(
        cookie=cookie, requested_protocols=requested, neg_flags=neg_flags, correlation_id=correlation_id
    )
    for chunks in ([packet], [packet[i : i + 1] for i in range(len(packet))]):
        outcome = run(ClientHandshake(), chunks, eof=False)
        assert outcome.kind == "event"
        assert isinstance(outcome.event, ConnectionRequestReceived)
        request = outcome.event.request
        assert request.raw == packet
        assert (request.cookie, request.routing_token) == (cookie, None)
        assert request.requested_protocols == requested
        expected_flags = None if requested is None else neg_flags | (0x08 if correlation_id else 0)
        assert request.neg_flags == expected_flags
        assert request.correlation_id == correlation_id
        assert request.li_mismatch is False


@fuzz
@given(token=line_bytes.filter(lambda t: not t.startswith(COOKIE_PREFIX)), requested=protocols)
def test_routing_token_round_trip(token: bytes, requested: int | None) -> None:
    request = parse_connection_request(
        build_connection_request(routing_token=token, requested_protocols=requested)
    )
    assert (request.cookie, request.routing_token, request.requested_protocols) == (None, token, requested)
    request.msts_target  # noqa: B018 - must not raise, whatever the token
    request.collection  # noqa: B018


@fuzz
@given(token=st.binary(max_size=80))
def test_token_properties_never_raise(token: bytes) -> None:
    request = ConnectionRequest(b"", None, token, None, None, None, False)
    target = request.msts_target
    assert target is None or isinstance(target, tuple)
    assert request.collection is None or isinstance(request.collection, str)


# --- msts tokens ---


@quick
@given(host=st.ip_addresses(v=4).map(str), port=st.integers(1, 65535))
def test_msts_round_trip(host: str, port: int) -> None:
    token = encode_msts_token(host, port)
    assert decode_msts_token(token) == (host, port)
    assert decode_msts_token(b"Cookie: msts=" + token.encode()) == (host, port)


@quick
@given(
    value=st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40),
        st.from_regex(r"-?\d{0,12}\.\d{0,7}\.\d{0,9}", fullmatch=True),
    )
)
def test_decode_msts_only_value_error(value: str | bytes) -> None:
    try:
        host, port = decode_msts_token(value)
    except ValueError:
        return
    assert 1 <= port <= 65535
    assert decode_msts_token(encode_msts_token(host, port)) == (host, port)
