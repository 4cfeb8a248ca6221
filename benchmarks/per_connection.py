"""Count the event-loop work one connection costs: tasks, futures, timers, reader/writer
registrations, log records and histogram samples, per connection, for C32 (new users) and C32r
(returning users).

    python benchmarks/per_connection.py [--connections 2000]

Runs rdpbalancer in this process (uvloop, the rdpb1 configuration of benchmarks/run.py, log
level info so the two session lines are counted) against the C test server, drives it with
the C load generator (8 connections in flight, --connections of them; C32r after a warm-up
of its 500 users), and counts with a task factory and `sys.setprofile` on the loop's methods.
Counts, not times: the profiler's own cost does not matter. Bounded by --connections.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rdpbench import cprogs, procs
from rdpbench.cells import BACKENDS
from rdpbench.targets import ProxyOptions, Rdpbalancer

from rdpbalancer.app import Balancer
from rdpbalancer.config.loader import parse_config
from rdpbalancer.logs import setup_logging

LOOP_METHODS = {  # what our code asks of the loop (uvloop's own internal calls are not counted)
    "create_task": "tasks", "create_future": "futures", "call_later": "timers (call_later)",
    "call_at": "timers (call_at)", "call_soon": "call_soon", "add_reader": "add_reader",
    "add_writer": "add_writer", "remove_reader": "remove_reader", "remove_writer": "remove_writer",
}
PYTHON_COUNTED = {"line": "log lines (logs.line)", "callHandlers": "log records (logging)",
                  "observe": "histogram samples"}


class Counts:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.on = False

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if self.on and event == "call":
            code = frame.f_code
            name = PYTHON_COUNTED.get(code.co_name)
            if name is not None and ("rdpbalancer" in code.co_filename or "logging" in code.co_filename):
                self.calls[name] += 1


COUNTS = Counts()


def _counting(method: str, label: str) -> Any:
    def counted(self: uvloop.Loop, *args: Any, **kwargs: Any) -> Any:
        if COUNTS.on:
            COUNTS.calls[label] += 1
        return getattr(super(CountingLoop, self), method)(*args, **kwargs)
    return counted


class CountingLoop(uvloop.Loop):  # type: ignore[misc]
    locals().update({method: _counting(method, label) for method, label in LOOP_METHODS.items()})


async def measure(users: int, connections: int, work: Path, binaries: cprogs.Binaries,
                  server_ports: list[int]) -> dict[str, float]:
    port = procs.free_port()
    text = Rdpbalancer("rdpb1", workers=1, log_level="info").config(
        port, server_ports, ProxyOptions([], "full", 20_000), work / f"sticky-{users}.db")
    balancer = Balancer(parse_config(text, str(work / "c.toml")))
    await balancer.start()
    counts = COUNTS
    counts.calls.clear()
    extra = {"users": users} if users else {}
    try:
        if users:
            await _loadgen(binaries, port, users, {**extra, "max-ops": users})
        sys.setprofile(counts.profile)
        counts.on = True
        result = await _loadgen(binaries, port, connections, {**extra, "max-ops": connections})
        counts.on = False
        sys.setprofile(None)
    finally:
        sys.setprofile(None)
        await balancer.stop()
    done = result["ops"]
    return {name: n / done for name, n in sorted(counts.calls.items())} | {"connections": done}


async def _loadgen(binaries: cprogs.Binaries, port: int, ops: int, extra: dict[str, Any]) -> dict[str, Any]:
    argv = cprogs.loadgen_argv(binaries, [], port, "setup", 8, 60, "p", extra)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return cprogs.parse_result(out.decode(), err.decode(), argv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rdpb-count-") as tmp:
        work = Path(tmp)
        setup_logging("info")
        logging.getLogger().handlers[0].setStream(open(work / "balancer.log", "w"))  # noqa: SIM115
        binaries = cprogs.build(work / "bin")
        with cprogs.TestServer(binaries.server, [], BACKENDS, work / "server.log") as server:
            rows = {}
            for name, users in (("C32", 0), ("C32r", 500)):
                with asyncio.Runner(loop_factory=CountingLoop) as runner:
                    rows[name] = runner.run(measure(users, args.connections, work, binaries, server.ports))
    names = sorted({k for row in rows.values() for k in row if k != "connections"})
    print(f"{'per connection':28} {'C32':>8} {'C32r':>8}")
    for key in names:
        print(f"{key:28} {rows['C32'].get(key, 0):8.2f} {rows['C32r'].get(key, 0):8.2f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
