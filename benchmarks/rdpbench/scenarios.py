"""The scenarios: what each measures, at which size, and which targets it applies to."""

from __future__ import annotations

from dataclasses import dataclass

QUICK_DURATION_S = 0.25  # --quick: every timed window; enough to exercise the whole pipeline


@dataclass(frozen=True)
class Metric:
    key: str  # the key in a run's record
    label: str
    higher_is_better: bool = True
    digits: int = 1


@dataclass(frozen=True)
class Size:
    conns: int  # connections, sessions, or sticky entries (S1M)
    duration_s: float = 0.0
    users: int = 0  # setup: 0 every connection a new user; N returning users cycled (each seen before)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: str  # "load" (the load generator's result), "memory" or "startup"
    primary: Metric
    extras: tuple[Metric, ...]
    default: Size
    quick: Size
    mode: str = ""  # the load generator's --mode
    applies_to: frozenset[str] = frozenset({"direct", "haproxy", "rdpb"})
    not_applicable: str = ""  # why the other targets are left out

    def size(self, quick: bool) -> Size:
        return self.quick if quick else self.default


CPU = (Metric("proxy_cpu_pct", "proxy CPU %", False, 0), Metric("proxy_core_busy_pct", "proxy core busy %", False, 0),
       Metric("load_core_busy_pct", "load core busy %", False, 0))
MS_P50 = Metric("lat_p50_ms", "p50 ms", False, 2)
US_PER_CONN = Metric("proxy_us_per_op", "proxy CPU us/conn", False, 0)  # user + sys of the proxy process
MS_P99 = Metric("lat_p99_ms", "p99 ms", False, 2)
DURATION_S = 3.0  # per timed window: long enough for a stable rate, short enough for 3 reps x 5 targets


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("T1", "bulk server->client, 1 connection", "load", Metric("mb_per_s", "MB/s"), CPU,
             Size(1, DURATION_S), Size(1, QUICK_DURATION_S), mode="bulk"),
    Scenario("T8", "bulk server->client, 8 connections", "load", Metric("mb_per_s", "MB/s"), CPU,
             Size(8, DURATION_S), Size(8, QUICK_DURATION_S), mode="bulk"),
    Scenario("L100", "100 sessions, 64-byte ping-pong", "load", Metric("ops_per_s", "round trips/s", digits=0),
             (MS_P50, MS_P99, *CPU), Size(100, DURATION_S), Size(20, QUICK_DURATION_S), mode="pingpong"),
    Scenario("L1000", "1000 sessions, 64-byte ping-pong", "load", Metric("ops_per_s", "round trips/s", digits=0),
             (MS_P50, MS_P99, *CPU), Size(1000, DURATION_S), Size(50, QUICK_DURATION_S), mode="pingpong"),
    Scenario("C32", "new connections, 32 concurrent, every one a new user", "load",
             Metric("ops_per_s", "conns/s", digits=0), (US_PER_CONN, MS_P50, MS_P99, *CPU),
             Size(32, DURATION_S), Size(8, QUICK_DURATION_S), mode="setup"),
    Scenario("C32r", "new connections, 32 concurrent, 500 returning users cycled", "load",
             Metric("ops_per_s", "conns/s", digits=0), (US_PER_CONN, MS_P50, MS_P99, *CPU),
             Size(32, DURATION_S, users=500), Size(8, QUICK_DURATION_S, users=50), mode="setup"),
    Scenario("M10k", "idle sessions: proxy RSS growth per session", "memory",
             Metric("kib_per_session", "KiB/session", False, 2),
             (Metric("sessions", "sessions", digits=0), Metric("rss_growth_mb", "RSS growth MB", False, 1)),
             Size(10_000), Size(100), applies_to=frozenset({"haproxy", "rdpb"}),
             not_applicable="no proxy process to measure"),
    Scenario("S1M", "start-up with 1,000,000 sticky entries on disk", "startup",
             Metric("start_s", "start-up s", False, 2),
             (Metric("rss_mb", "RSS MB", False, 0), Metric("bytes_per_entry", "B/entry", False, 0),
              Metric("start_empty_s", "empty start s", False, 2)),
             Size(1_000_000), Size(5_000), applies_to=frozenset({"rdpb"}),
             not_applicable="no persistent sticky table (HAProxy's is in memory only)"),
)}
