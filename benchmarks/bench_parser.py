"""Connection Requests parsed per second by the sans-IO ClientHandshake.

One "parse" is what the relay does per new client: a new ClientHandshake, one
receive_data() with the whole CR, one next_event(). Prints, per vector, the
median rate of several timed runs (and the per-CR cost), plus a byte-by-byte
run as a worst case. Runs are interleaved across vectors and the best run is
shown beside the median, as a shared machine adds noise.

Standalone: ``python benchmarks/bench_parser.py`` (a few seconds).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from rdpbalancer.proto import ClientHandshake, ConnectionRequestReceived  # noqa: E402

VECTORS = ROOT / "tests" / "data" / "x224"
CASES = [
    "freerdp2-cr-user-alice.bin",
    "freerdp2-cr-sec-rdp-alice.bin",
    "freerdp2-cr-lbinfo-tsv-sales.bin",
    "constructed-cr-msts-token-172.31.249.216-3389.bin",
    "constructed-cr-bob-correlation-info.bin",
    "freerdp2-cr-user-long300.bin",
]
RUNS = 7
TARGET_RUN_S = 0.06  # per timed run; RUNS x cases x this keeps the whole script to a few seconds


def parse_whole(data: bytes) -> None:
    hs = ClientHandshake()
    hs.receive_data(data)
    event = hs.next_event()
    if not isinstance(event, ConnectionRequestReceived):
        raise SystemExit(f"not parsed: {event!r}")


def parse_byte_by_byte(data: bytes) -> None:
    hs = ClientHandshake()
    for i in range(len(data)):
        hs.receive_data(data[i : i + 1])
        hs.next_event()
    if not isinstance(hs.next_event(), ConnectionRequestReceived):
        raise SystemExit("not parsed")


def calibrate(parse: Callable[[bytes], None], data: bytes) -> int:
    """Iterations that take about TARGET_RUN_S."""
    probe = 2000
    start = time.perf_counter()
    for _ in range(probe):
        parse(data)
    elapsed = time.perf_counter() - start
    return max(probe, int(probe * TARGET_RUN_S / elapsed))


def time_once(parse: Callable[[bytes], None], data: bytes, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        parse(data)
    return iterations / (time.perf_counter() - start)


def main() -> None:
    cases = [(name, parse_whole) for name in CASES]
    cases.append(("freerdp2-cr-user-alice.bin", parse_byte_by_byte))
    loaded = [(name, parse, (VECTORS / name).read_bytes()) for name, parse in cases]
    iterations = [calibrate(parse, data) for _, parse, data in loaded]
    rates: list[list[float]] = [[] for _ in loaded]
    for _ in range(RUNS):  # interleaved, so background load hits every case alike
        for index, (_, parse, data) in enumerate(loaded):
            rates[index].append(time_once(parse, data, iterations[index]))
    print(f"Python {sys.version.split()[0]}, {RUNS} interleaved runs per vector")
    print(f"{'vector':<52} {'bytes':>5} {'median CR/s':>12} {'us/CR':>6} {'best CR/s':>10}")
    for (name, parse, data), case_rates in zip(loaded, rates, strict=True):
        median = statistics.median(case_rates)
        label = name if parse is parse_whole else f"{name} (1 byte/call)"
        print(f"{label:<52} {len(data):>5} {median:>12,.0f} {1e6 / median:>6.2f} {max(case_rates):>10,.0f}")


if __name__ == "__main__":
    main()
