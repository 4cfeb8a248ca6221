"""Bulk throughput of the splice relay by pipe size: what a service account loses when the kernel
gives its pipes 8 KiB (over fs.pipe-user-pages-soft) instead of 1 MiB, and what 64 KiB keeps.

    python benchmarks/pipe_sizes.py [--mib 512] [--reps 5]

One SplicePump between two loopback TCP connections, a sender pushing --mib MiB one way and a
reader draining the other end; MiB/s, median of --reps runs per size, in one run. Loopback
only; every transfer is bounded by its size.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import socket
import statistics
import time

from rdpbalancer.relay.splice import F_SETPIPE_SZ, PipePool, SplicePump

SIZES = {"8 KiB (over the user's soft limit)": 8192, "64 KiB (default pipe)": 1 << 16, "1 MiB (ours)": 1 << 20}
CHUNK = 1 << 20


class FixedPool(PipePool):
    def __init__(self, size: int) -> None:
        super().__init__(page_budget=None)
        self.size = size

    def get(self) -> tuple[int, int]:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(w, F_SETPIPE_SZ, self.size)
        return r, w


def pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setblocking(False)
    return a, b


async def one_run(size: int, total: int) -> float:
    loop = asyncio.get_running_loop()
    sender, client = pair()  # sender -> client side of the pump
    backend, reader = pair()  # backend side of the pump -> reader
    done = loop.create_future()
    pump = SplicePump(client, backend, FixedPool(size), lambda *_: done.done() or done.set_result(None))
    pump.start()
    payload = b"x" * CHUNK
    started = time.perf_counter()

    async def send() -> None:
        for _ in range(total // CHUNK):
            await loop.sock_sendall(sender, payload)
        sender.shutdown(socket.SHUT_WR)

    async def receive() -> int:
        got = 0
        while chunk := await loop.sock_recv(reader, CHUNK):
            got += len(chunk)
        return got

    _, got = await asyncio.gather(send(), receive())
    elapsed = time.perf_counter() - started
    assert got == total, (got, total)
    pump.abort("done")
    for s in (sender, reader):
        s.close()
    return total / elapsed / (1 << 20)


async def main(mib: int, reps: int) -> None:
    print(f"splice relay, {mib} MiB one way, median of {reps} runs (uid {os.geteuid()})")
    for label, size in SIZES.items():
        rates = [await one_run(size, mib << 20) for _ in range(reps)]
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"  pipe {label:36s} {statistics.median(rates):8.0f} MiB/s  (runs: {runs})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.reps))
