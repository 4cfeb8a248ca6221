#!/usr/bin/env python3
"""Fuzz what runs on a client's first bytes: the X.224 Connection Request reader.

Follows rdpbalancer/relay/session.py: ``ClientHandshake.receive_data`` and
``next_event`` (``_feed``, EOF included), then on a Connection Request the
sticky key, its log form, the msts target and the collection (``_request``).
The same bytes also go through ``parse_connection_request`` and, since health
probes read a backend's first bytes with it, ``ServerHandshake``.

ProtocolError is the parser's documented refusal and passes; any other
exception, or a broken invariant (bytes dropped, a verdict that depends on
fragmentation), is a crash. Run it (see fuzz/README.md):

    python fuzz/fuzz_request.py fuzz/corpus/request -max_total_time=14400

``TestOneInput`` imports without atheris: tests/unit/test_fuzz_harness.py runs
every seed and every tests/data/fuzz-regressions/ file through it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    import atheris  # type: ignore[import-untyped,unused-ignore]

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # fuzz this checkout
    _instrumented: Any = atheris.instrument_imports(include=["rdpbalancer"])
else:
    _instrumented = contextlib.nullcontext()

with _instrumented:
    from rdpbalancer.policy.identity import printable, user_key
    from rdpbalancer.proto import (
        ClientHandshake,
        ConnectionRequest,
        ConnectionRequestReceived,
        NeedData,
        ProtocolError,
        ServerHandshake,
        parse_connection_confirm,
        parse_connection_request,
    )
    from rdpbalancer.proto.errors import ALL_KINDS

_BYTE_BY_BYTE = 24  # TPKT + X.224 fixed part + the start of the variable part
Verdict = tuple[str, object, bytes]  # ("event", event, trailing) | ("need-data"|kind, None, b"")


def _refusal(err: ProtocolError) -> Verdict:
    if err.kind not in ALL_KINDS or not str(err):
        raise AssertionError(f"ProtocolError with unknown kind or empty message: {err!r}")
    return (err.kind, None, b"")


def _poll(reader: ClientHandshake | ServerHandshake) -> Verdict | None:
    try:
        event = reader.next_event()
    except ProtocolError as err:
        return _refusal(err)
    return None if isinstance(event, NeedData) else ("event", event, b"")


def _run(reader: ClientHandshake | ServerHandshake, chunks: list[bytes]) -> Verdict:
    """Feed every chunk then EOF, polling until the first verdict (as the relay does)."""
    verdict = None
    for chunk in [*chunks, b""]:
        reader.receive_data(chunk)  # after the verdict too: trailing bytes must all be kept
        if verdict is None:
            verdict = _poll(reader)
    if verdict is None:
        return ("need-data", None, b"")
    return (verdict[0], verdict[1], reader.trailing_data)


def _identity(request: ConnectionRequest) -> None:
    """What Session._request derives from a request, and the log form of the key."""
    if request.cookie is not None:
        for strip in (True, False):
            key = user_key(request.cookie, strip_domain=strip)
            if key is not None:
                printable(key)
    request.msts_target  # noqa: B018 - properties run decoders on untrusted bytes
    request.collection  # noqa: B018


def _fragments(data: bytes) -> list[bytes]:
    """The fixed parts one byte at a time, then 7-byte chunks: byte-by-byte throughout is 5x slower."""
    head = [data[i : i + 1] for i in range(min(len(data), _BYTE_BY_BYTE))]
    return head + [data[i : i + 7] for i in range(_BYTE_BY_BYTE, len(data), 7)]


def _check_client(data: bytes) -> None:
    whole = _run(ClientHandshake(), [data] if data else [])
    pieces = _run(ClientHandshake(), _fragments(data))
    if whole != pieces:
        raise AssertionError(f"fed whole: {whole[0]}, fed in fragments: {pieces[0]}")
    if whole[0] == "need-data":
        raise AssertionError("EOF left the reader waiting for data")
    if isinstance(whole[1], ConnectionRequestReceived):
        request = whole[1].request
        if request.raw + whole[2] != data:
            raise AssertionError("request.raw + trailing_data is not the input")
        if parse_connection_request(request.raw) != request:
            raise AssertionError("parse_connection_request disagrees with ClientHandshake")
        _identity(request)


def TestOneInput(data: bytes) -> None:  # the name atheris and libFuzzer expect
    _check_client(data)
    with contextlib.suppress(ProtocolError):
        _identity(parse_connection_request(data))
    _run(ServerHandshake(), [data] if data else [])
    with contextlib.suppress(ProtocolError):
        parse_connection_confirm(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
