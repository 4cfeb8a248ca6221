"""Junk first packets are closed within the handshake timeout; the balancer keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from rdpbalancer.proto import MAX_CONNECTION_REQUEST_BYTES, build_connection_request
from tests.support.balancer import farm_config, running, wait_until
from tests.support.fakes import start_farm, where

HANDSHAKE_TIMEOUT_S = 1.0  # farm_config's value
CR = build_connection_request(cookie=b"alice")
TLS_CLIENT_HELLO = bytes.fromhex("16030100f5010000f10303") + os.urandom(64)  # record + ClientHello header
OVERSIZED = b"\x03\x00" + (MAX_CONNECTION_REQUEST_BYTES + 1).to_bytes(2, "big") + b"\x00" * 64

JUNK = {
    "random": os.urandom(200),
    "http": b"GET / HTTP/1.1\r\nHost: rdp.example\r\n\r\n",
    "tls-client-hello": TLS_CLIENT_HELLO,
    "truncated-cr": CR[:-5],  # then silence: the deadline closes it
    "oversized-cr": OVERSIZED,
    "nothing": b"",
    "tpkt-not-x224": b"\x03\x00\x00\x0b\x06\xd0\x00\x00\x12\x34\x00",
}


@pytest.mark.parametrize("name", list(JUNK))
async def test_junk_is_closed_within_the_handshake_timeout(tmp_path: Path, name: str) -> None:
    farm = await start_farm("TS01")
    async with running(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(JUNK[name])
        reply = await asyncio.wait_for(reader.read(), HANDSHAKE_TIMEOUT_S + 2)
        elapsed = time.monotonic() - started
        writer.close()
        assert reply == b""  # a clean close, nothing sent
        assert elapsed < HANDSHAKE_TIMEOUT_S + 1
        assert farm[0].accepted == 0  # junk never reaches a server
        assert sum(bal.ctx.stats.malformed.values()) == 1
        assert await where(port, "alice") == "TS01"  # and the balancer still serves
    await farm[0].stop()


async def test_client_that_vanishes_mid_handshake(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    async with running(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        for _ in range(20):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(CR[:10])
            writer.transport.abort()
        assert await where(port, "alice") == "TS01"
        with contextlib.suppress(TimeoutError):  # the aborted ones end as the balancer reads their resets
            await wait_until(lambda: len(bal.ctx.sessions) == 0)
        assert len(bal.ctx.sessions) == 0
    await farm[0].stop()


async def test_connect_and_close_is_a_probe_not_malformed(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    async with running(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db")) as bal:
        port = bal.addresses[0][1]
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
        assert await where(port, "alice") == "TS01"
        with contextlib.suppress(TimeoutError):  # until the five empty ones are counted and ended
            await wait_until(lambda: bal.ctx.stats.connections["empty"] == 5 and len(bal.ctx.sessions) == 0)
        assert bal.ctx.stats.connections["empty"] == 5
        assert sum(bal.ctx.stats.malformed.values()) == 0
        assert len(bal.ctx.sessions) == 0
    await farm[0].stop()
