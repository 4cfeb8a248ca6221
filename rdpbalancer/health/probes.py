"""Active checks: "tcp" (connect only) and "rdp" (a real X.224 exchange).

The rdp probe sends the Connection Request a real client sends (RDP_NEG_REQ asking for TLS and
CredSSP, no cookie) and expects a well-formed Connection Confirm. An RDP_NEG_FAILURE is a pass:
it proves an RDP stack is answering, which is all a health check can know before TLS.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from rdpbalancer.netaddr import describe_os_error
from rdpbalancer.proto import (
    PROTOCOL_HYBRID,
    PROTOCOL_SSL,
    ConnectionConfirmReceived,
    ProtocolError,
    ServerHandshake,
    build_connection_request,
)

PROBE_REQUEST = build_connection_request(cookie=None, requested_protocols=PROTOCOL_SSL | PROTOCOL_HYBRID)
READ_CHUNK = 512  # a Connection Confirm is 11 or 19 bytes


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency_s: float
    error: str | None = None


async def probe(kind: str, host: str, port: int, timeout_s: float) -> ProbeResult:
    started = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            if kind == "rdp":
                await _exchange(reader, writer)
    except TimeoutError:
        return ProbeResult(False, time.monotonic() - started, f"no answer within {timeout_s:g}s")
    except OSError as exc:
        return ProbeResult(False, time.monotonic() - started, describe_os_error(exc))
    except ProtocolError as exc:
        return ProbeResult(False, time.monotonic() - started, f"not an RDP answer: {exc}")
    finally:
        if writer is not None:
            writer.transport.abort()  # no lingering FIN_WAIT: the server sees a reset, as after a scan
    return ProbeResult(True, time.monotonic() - started)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(PROBE_REQUEST)
    handshake = ServerHandshake()
    while True:
        data = await reader.read(READ_CHUNK)
        handshake.receive_data(data)
        if isinstance(handshake.next_event(), ConnectionConfirmReceived):
            return


