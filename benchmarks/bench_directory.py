"""What the session directory adds to each connection: the routing decision with 50 hosts x 100
sessions known, against the same decision without a directory. Everything else a connection
costs (accept, parse, connect, relay) is the same with and without it, so the difference here is
the whole difference; compare it with the proxy CPU per connection from `benchmarks/run.py`.

    python benchmarks/bench_directory.py [--hosts 50] [--sessions 100] [--reps 7]

Prints µs per decision (median of the repetitions) for new users, returning users (found in
the directory) and users with a stale sticky entry (no-session), each with and without the
directory, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.host_sessions import HostReport, HostSession, SessionDirectory, SessionRules
from rdpbalancer.policy.model import BalanceKind, Pool, PoolMember, RouteRequest, Server
from rdpbalancer.policy.sticky import StickyTable

NOW = 1_800_000_000.0
DECISIONS = 20_000


def build(hosts: int, sessions: int, *, directory: bool, balance: BalanceKind) -> Router:
    servers = [Server(f"TS{i:02d}", "127.0.0.1", 10_000 + i) for i in range(hosts)]
    pool = Pool("farm", balance, tuple(PoolMember(s, 1) for s in servers))
    rules = {"farm": SessionRules()} if directory else {}
    router = Router(RoutingPolicy((pool,), session_rules=rules), StickyTable(ttl_s=8 * 3600.0, max_entries=1_000_000))
    for i in range(hosts * sessions):  # the table knows the same users the hosts report
        router.table.assign(f"user{i}", "farm", servers[i % hosts].name, NOW - 60)
    if directory:
        router.host_sessions = SessionDirectory()
        for h, server in enumerate(servers):
            listed = tuple(HostSession(f"user{i}", "CORP", id=str(i)) for i in range(h, hosts * sessions, hosts))
            router.host_sessions.update(HostReport(server.name, listed, at=NOW - 5))
    return router


def per_decision_us(router: Router, users: list[str]) -> float:
    requests = [RouteRequest("10.0.0.1", u) for u in users]
    started = time.perf_counter()
    for request in requests:
        router.decide(request, NOW)
    return (time.perf_counter() - started) / len(requests) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    total = args.hosts * args.sessions
    cases = {
        "returning user (session / sticky-hit)": [f"user{i % total}" for i in range(DECISIONS)],
        "new user (leastconn)": [f"new{i}" for i in range(DECISIONS)],
    }
    print(f"{args.hosts} hosts x {args.sessions} sessions, {DECISIONS} decisions per run, median of {args.reps}")
    print(f"{'case':42} {'without':>10} {'with':>10} {'ratio':>7}")
    for balance in (BalanceKind.LEASTCONN, BalanceKind.LEASTSESSIONS):
        for case, users in cases.items():
            label = case.replace("leastconn", str(balance)) if "new" in case else case
            results = {}
            for directory in (False, True):
                router = build(args.hosts, args.sessions, directory=directory, balance=balance)
                results[directory] = statistics.median(per_decision_us(router, users) for _ in range(args.reps))
            print(f"{label + f' [{balance}]':42} {results[False]:9.1f}u {results[True]:9.1f}u "
                  f"{results[True] / results[False]:6.2f}x")


if __name__ == "__main__":
    main()
