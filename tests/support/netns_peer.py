"""The two ends of a session inside network namespaces (tests/support/netns.py), as programs:

    python3 -m tests.support.netns_peer server PORT LOG
        an RDP host on every address of its namespace (IPv4 and IPv6): answers a Connection
        Request with a Confirm, then answers WHO? with the address it saw ("10.1.1.2:40000")
        and echoes the rest; every connection's peer is appended to LOG, health checks too.
    python3 -m tests.support.netns_peer client HOST PORT USER [--source ADDR] [--hold]
        connects through the balancer as USER and prints the address the host saw; --hold
        keeps the session open until a line comes on stdin, then checks it still echoes
        (prints "alive");
        --proxy ADDR sends a PROXY v1 header naming ADDR first, as a proxy in front would."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path

from rdpbalancer.netaddr import format_addr
from rdpbalancer.proto import (
    PROTOCOL_SSL,
    ClientHandshake,
    ConnectionRequestReceived,
    build_connection_confirm,
    build_connection_request,
)
from tests.support.fakes import WHO, rdp_connect, read_tpkt


async def serve(port: int, log: Path) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]).removeprefix("::ffff:")
        seen = format_addr(host, int(peer[1]))
        with log.open("a") as out:
            out.write(f"peer {seen}\n")
        try:
            hs = ClientHandshake()
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                hs.receive_data(data)
                if isinstance(hs.next_event(), ConnectionRequestReceived):
                    break
            writer.write(build_connection_confirm(PROTOCOL_SSL))
            data = hs.trailing_data
            while True:
                if data:
                    writer.write(seen.encode() + b"\n" if data == WHO else data)
                    await writer.drain()
                data = await reader.read(65536)
                if not data:
                    return
        except (OSError, ValueError):
            return
        finally:
            writer.close()

    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    server = await asyncio.start_server(handle, sock=sock)
    print("serving", flush=True)
    async with server:
        await server.serve_forever()


async def client(host: str, port: int, user: str, source: str | None, hold: bool, proxy: str | None,
                 count: int = 1) -> int:
    if proxy is not None:
        return await proxied(host, port, user, proxy)
    for n in range(count - 1):  # the users USER1.. first, one after another
        other = await rdp_connect(port, f"{user}{n + 1}", host=host, local_host=source)
        print(other.server, flush=True)
        await other.close()
    connected = await rdp_connect(port, user, host=host, local_host=source)
    print(connected.server, flush=True)
    if hold:  # until the test has done what the session must outlive
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        connected.writer.write(b"still there?")
        echoed = await asyncio.wait_for(connected.reader.readexactly(12), 5)
        print("alive" if echoed == b"still there?" else f"echo {echoed!r}", flush=True)
    await connected.close()
    return 0


async def proxied(host: str, port: int, user: str, reported: str) -> int:
    """As a proxy in front would: a PROXY v1 header naming `reported` as the client, then the CR."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"PROXY TCP4 {reported} {host} 50000 {port}\r\n".encode()
                     + build_connection_request(cookie=user.encode()))
        await read_tpkt(reader)
        writer.write(WHO)
        print((await reader.readline()).decode().strip(), flush=True)
        writer.close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="netns_peer")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("port", type=int)
    s.add_argument("log", type=Path)
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("user")
    c.add_argument("--source")
    c.add_argument("--hold", action="store_true")
    c.add_argument("--count", type=int, default=1, help="connect COUNT times (users USER1.., then USER)")
    c.add_argument("--proxy", help="send a PROXY v1 header naming this IPv4 address as the client")
    args = parser.parse_args(argv)
    if args.role == "server":
        asyncio.run(serve(args.port, args.log))
        return 0
    return asyncio.run(client(args.host, args.port, args.user, args.source, args.hold, args.proxy, args.count))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
