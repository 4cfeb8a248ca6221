"""The transparent connect alone: wall and CPU time per connect, with and without transparent mode's steps.

    python3 benchmarks/transparent_connect.py --netns [--connects 20000] [--rounds 7]

One thread: blocking connects to a listener on 127.0.0.1, each accepted and both ends closed
(the client with SO_LINGER 0: no TIME_WAIT piles up). Rounds alternate between the plain
connect and the transparent one, which adds what rdpbalancer does per connection in the mode,
with the product's own functions: `source_for` and `bind_transparent` (IP_TRANSPARENT,
IP_BIND_ADDRESS_NO_PORT, a bind to the client's address, here 127.0.0.1) before the connect
(relay/sockets.connect_raw), a `getsockname` and `source_for` again after it (Session._saw).
Prints the median per-connect microseconds over the rounds and the difference. The harness's
rdpb1t rows (run.py --netns) carry the same steps inside whole balanced connections, where
run-to-run noise is larger than they are; this isolates them. Needs CAP_NET_ADMIN; `--netns`
runs it in a fresh namespace with the routing up (as run.py --netns), deleted afterwards.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from rdpbench import netns  # noqa: E402
from rdpbench.procs import BenchError  # noqa: E402

from rdpbalancer.transparent import bind_transparent, source_for  # noqa: E402

CLIENT = "127.0.0.1"
LINGER_RST = struct.pack("ii", 1, 0)
MAX_CONNECTS = 200_000  # per round: bounds the run


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_round(listener: socket.socket, connects: int, transparent: bool) -> tuple[float, float]:
    """(wall us, CPU us) per connect over `connects` connects."""
    address = listener.getsockname()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(connects):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        if transparent and (source := source_for(CLIENT, socket.AF_INET)) is not None:
            bind_transparent(sock, source)
        sock.connect(address)
        if transparent and sock.getsockname()[0] != source_for(CLIENT, sock.family):
            raise BenchError(f"the connection came from {sock.getsockname()}, not from {CLIENT}")
        peer, _ = listener.accept()
        sock.close()
        peer.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return 1e6 * wall / connects, 1e6 * cpu / connects


def measure(connects: int, rounds: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        one_round(listener, min(connects, 2000), True)  # warm-up; also fails at once without the capability
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for index in range(rounds):
            for transparent in (False, True) if index % 2 == 0 else (True, False):
                results[transparent].append(one_round(listener, connects, transparent))
    median = {t: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for t, r in results.items()}
    for t, name in ((False, "plain connect"), (True, "transparent connect")):
        walls = [w for w, _ in results[t]]
        cpus = [c for _, c in results[t]]
        print(f"{name:<20} wall {median[t][0]:6.2f} us [{min(walls):.2f} .. {max(walls):.2f}]   "
              f"CPU {median[t][1]:6.2f} us [{min(cpus):.2f} .. {max(cpus):.2f}]")
    print(f"{'difference':<20} wall {median[True][0] - median[False][0]:+6.2f} us"
          f"{'':18}CPU {median[True][1] - median[False][1]:+6.2f} us   "
          f"(medians of {rounds} rounds of {connects:,} connects each, per connect)")
    return 0


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connects", type=int, default=20_000, help="connects per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each kind, alternating (default 7)")
    parser.add_argument("--netns", action="store_true", help="in a fresh network namespace with the routing up")
    parser.add_argument("--in-netns", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args(raw)
    if not 1 <= args.connects <= MAX_CONNECTS or not 1 <= args.rounds <= 100:
        parser.error(f"--connects 1..{MAX_CONNECTS}, --rounds 1..100")
    if args.netns and not args.in_netns:
        return netns.run_inside("lo", raw, progress)
    return measure(args.connects, args.rounds)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, PermissionError) as exc:
        print(f"transparent_connect.py: {exc}", file=sys.stderr)
        sys.exit(2)
