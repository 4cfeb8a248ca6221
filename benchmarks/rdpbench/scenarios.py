"""The scenarios: what each measures, at which size, and which targets it applies to."""

from __future__ import annotations

import re
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
class SessionSpec:
    """The session model's settings (rdpb_sessions.c; the model is in benchmarks/README.md)."""

    mix: tuple[float, float, float, float, float] = (40, 35, 15, 8, 2)  # idle, typing, mouse, scroll, video (%)
    pinned_video: int = 0  # % of sessions that watch video throughout (F-video)
    storm_s: float = 0.0  # F-storm: drop every session, each reconnects within this many seconds
    kill_proxy: bool = False  # F-failover: at the drop the proxy is killed (SIGKILL) and started again
    warmup_s: float = 2.0  # traffic before the measured window
    cookie_prefix: str | None = None  # None: the cell's own prefix


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
    session: SessionSpec | None = None  # kind "session": the model's settings

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


# --- the RDP session model (issue 26): F-office at several sizes, F-storm, F-video ----------------

F_DURATION_S = 8.0  # the measured window of a session scenario
F_QUICK_DURATION_S = 0.5
OFFICE_SIZES = (500, 1000, 1500, 2000, 4000)  # calibrated to this 2-core box: see benchmarks/README.md
STORM_SESSIONS = 2000
VIDEO_SESSIONS = 500
F_LAT = (Metric("added_p50_ms", "added p50 ms", False, 3), Metric("added_p99_ms", "added p99 ms", False, 3),
         Metric("added_p999_ms", "added p99.9 ms", False, 3))
F_CPU = (Metric("proxy_cpu_per_1k_pct", "proxy CPU %/1000 sessions", False, 1), Metric("rss_mb", "RSS MB", False, 0))
F_PRIMARY = Metric("in_p99_ms", "input->update p99 ms", False, 3)
OFFICE = re.compile(r"F-office-(\d+)$")


def office(sessions: int) -> Scenario:
    return Scenario(f"F-office-{sessions}", f"{sessions} RDP sessions, office mix", "session", F_PRIMARY,
                    (*F_LAT, *F_CPU, *CPU), Size(sessions, F_DURATION_S),
                    Size(max(4, sessions // 100), F_QUICK_DURATION_S), session=SessionSpec())


F_SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    *(office(n) for n in OFFICE_SIZES),
    Scenario("F-storm", f"{STORM_SESSIONS} sessions dropped at once, back within 10 s", "session",
             Metric("storm_all_back_s", "s until all back", False, 2),
             (Metric("storm_refusals", "refusals", False, 0), Metric("storm_moved", "moved", False, 0),
              Metric("storm_lost", "lost", False, 0), Metric("reconnect_p99_ms", "reconnect p99 ms", False, 1),
              *CPU),
             Size(STORM_SESSIONS, 3.0), Size(20, F_QUICK_DURATION_S),
             session=SessionSpec(storm_s=10.0, cookie_prefix="user")),
    Scenario("F-failover", f"{STORM_SESSIONS} sessions dropped as the proxy is killed and restarted, back "
             "within 10 s", "session", Metric("storm_all_back_s", "s until all back", False, 2),
             (Metric("storm_refusals", "refusals", False, 0), Metric("storm_moved", "moved", False, 0),
              Metric("storm_lost", "lost", False, 0), Metric("restart_s", "restart s", False, 2),
              Metric("reconnect_p99_ms", "reconnect p99 ms", False, 1)),
             Size(STORM_SESSIONS, 3.0), Size(20, F_QUICK_DURATION_S),
             session=SessionSpec(storm_s=10.0, cookie_prefix="user", kill_proxy=True),
             applies_to=frozenset({"haproxy", "rdpb"}), not_applicable="no proxy to kill"),
    Scenario("F-video", f"{VIDEO_SESSIONS} sessions, 20 % in video", "session", F_PRIMARY,
             (*F_LAT, Metric("frame_p99_ms", "frame p99 ms", False, 1),
              Metric("frames_skipped_pct", "frames skipped %", False, 1), Metric("mb_per_s", "MB/s"), *CPU),
             Size(VIDEO_SESSIONS, F_DURATION_S), Size(10, F_QUICK_DURATION_S),
             session=SessionSpec(mix=(40, 35, 15, 8, 0), pinned_video=20)),
)}
CLASSIC = list(SCENARIOS)  # the default selection of run.py
F_GROUP = [n for n in F_SCENARIOS if n != "F-failover"]  # F-failover runs on request
GROUPS = {"F-office": [n for n in F_SCENARIOS if OFFICE.match(n)], "F": F_GROUP,
          "classic": CLASSIC, "all": CLASSIC + list(F_SCENARIOS)}


def lookup(name: str) -> Scenario | None:
    """A scenario by name; F-office-<N> for any N."""
    found = SCENARIOS.get(name) or F_SCENARIOS.get(name)
    if found is None and (match := OFFICE.match(name)) and 0 < int(match.group(1)) <= 100_000:
        found = office(int(match.group(1)))
    return found
