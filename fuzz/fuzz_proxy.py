#!/usr/bin/env python3
"""Fuzz the PROXY protocol header parser (rdpbalancer/proto/proxy.py), then hand what
follows the header to the X.224 reader, as a listener behind a proxy would.

ProxyProtocolError (kind in PROXY_KINDS) is the documented refusal and passes;
the X.224 reader may refuse the rest with ProtocolError. Any other exception,
or a broken invariant, is a crash: a header longer than the input or the cap, a
header that does not parse the same from exactly its own bytes, a verdict that
changes when the input is cut short, an address the builders cannot rebuild.
Run it (see fuzz/README.md):

    python fuzz/fuzz_proxy.py fuzz/corpus/proxy -max_total_time=14400

``TestOneInput`` imports without atheris (tests/unit/test_fuzz_harness.py).
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
    from rdpbalancer.proto import ClientHandshake, ProtocolError
    from rdpbalancer.proto.builders import build_proxy_v1, build_proxy_v2
    from rdpbalancer.proto.errors import NOT_PROXY, PROXY_KINDS, ProxyProtocolError
    from rdpbalancer.proto.proxy import (
        MAX_PROXY_HEADER_BYTES,
        ProxyHeader,
        looks_like_proxy_header,
        parse_proxy_header,
    )


def _verdict(data: bytes) -> ProxyHeader | str | None:
    """The header, None (need data), or the kind of the refusal."""
    try:
        return parse_proxy_header(data)
    except ProxyProtocolError as err:
        if err.kind not in PROXY_KINDS or not str(err):
            raise AssertionError(f"ProxyProtocolError with unknown kind or empty message: {err!r}") from err
        return err.kind


def _check_header(data: bytes, header: ProxyHeader) -> None:
    if not 0 < header.length <= min(len(data), MAX_PROXY_HEADER_BYTES) or header.version not in (1, 2):
        raise AssertionError(f"impossible header {header} for {len(data)} bytes")
    if _verdict(data[: header.length]) != header or _verdict(data[: header.length - 1]) is not None:
        raise AssertionError("the header does not parse the same from exactly its own bytes")
    if (header.source is None) != (header.destination is None):
        raise AssertionError(f"one address without the other: {header}")
    if header.source is not None and header.destination is not None:
        build = build_proxy_v1 if header.version == 1 else build_proxy_v2
        rebuilt = parse_proxy_header(build(header.source, header.destination))
        if rebuilt is None or (rebuilt.source, rebuilt.destination) != (header.source, header.destination):
            raise AssertionError(f"{header} does not survive build + parse: {rebuilt}")


def _check_prefixes(data: bytes, verdict: ProxyHeader | str | None) -> None:
    """Cut short, the input needs data or gets the same verdict (a few cuts, to keep runs fast)."""
    for cut in {1, 6, 12, 13, 14, 16, len(data) // 2, len(data) - 1}:
        if 0 <= cut < len(data):
            prefix = _verdict(data[:cut])
            if prefix is not None and prefix != verdict:
                raise AssertionError(f"{cut}-byte prefix gives {prefix!r}, the whole input {verdict!r}")


def TestOneInput(data: bytes) -> None:  # the name atheris and libFuzzer expect
    verdict = _verdict(data)
    if not looks_like_proxy_header(data) and verdict != NOT_PROXY:
        raise AssertionError(f"looks_like_proxy_header is False but the verdict is {verdict!r}")
    _check_prefixes(data, verdict)
    if isinstance(verdict, ProxyHeader):
        _check_header(data, verdict)
        reader = ClientHandshake()
        reader.receive_data(data[verdict.length :])  # b"" is EOF: refused, fine
        with contextlib.suppress(ProtocolError):
            reader.next_event()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
