"""One cell = one scenario against one target, once: fresh test server, fresh proxy, one record.

A record is a flat dict of numbers (plus `errors` and `first_error`), keyed as the scenario's
metrics name them. Every proxy starts anew for each cell, with an empty sticky file (S1M: a
copy of the generated one), so no cell inherits another's state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rdpbench import procs
from rdpbench.cprogs import Binaries, HeldLoad, SessionLoad, TestServer, loadgen_argv, run_loadgen, sessions_argv
from rdpbench.procs import BenchError
from rdpbench.scenarios import Scenario
from rdpbench.stickydb import fresh_copy
from rdpbench.targets import ProxyOptions, Running, Target, child_env

BACKENDS = 4  # test server ports, one per configured server: leastconn has a choice to make
SESSION_FD_RESERVE = 500  # M10k: descriptors left to the proxy besides 2 per session
WARMUP_SESSIONS = 200  # M10k: opened and closed before the baseline, so one-off allocations are not counted
PROBE_SOCKETS = 2 * BACKENDS  # M10k: health-check probes (one per server) that may be open at any moment
SETTLE_TIMEOUT_S = 15.0  # M10k: for the proxy to close or open every session's backend socket
HOLD_MAX_S = 300.0  # M10k: the load generator lets its sessions go by itself after this
SETTLE_POLL_S = 0.02
WARMUP_MAX_S = 30.0  # C32r: the window of the warm-up run (it ends once every user has connected)
SESSION_SETUP_S = 120.0  # session scenarios: the load generator's allowance for opening every session
QUICK_STORM_S = 1.0  # --quick: the reconnect spread of F-storm
RESTART_TIMEOUT_S = 60.0  # F-failover: for the killed proxy to accept connections again
Record = dict[str, Any]


@dataclass(frozen=True)
class CellEnv:
    binaries: Binaries
    load_cpus: list[int]
    proxy: ProxyOptions
    quick: bool
    cell_dir: Path
    cookie_prefix: str
    sticky_source: Path | None = None  # S1M: the generated sticky file


def run_cell(scenario: Scenario, target: Target, env: CellEnv) -> Record:
    runners: dict[str, Callable[[Scenario, Target, CellEnv], Record]] = {
        "load": load_cell, "memory": memory_cell, "startup": startup_cell, "session": session_cell,
    }
    env.cell_dir.mkdir(parents=True, exist_ok=True)
    return runners[scenario.kind](scenario, target, env)


def _server(env: CellEnv) -> TestServer:
    net = env.proxy.net
    return TestServer(env.binaries.server, env.load_cpus, BACKENDS, env.cell_dir / "testserver.log",
                      net=None if net.server_ns is None else net)


def _where(env: CellEnv, proxy: Running) -> dict[str, Any]:
    """The load generators' target address and namespace: only given when not all on loopback
    (--netns veth), so the default command lines stay as they were."""
    net = env.proxy.net
    if net.client_ns is None and proxy.host == "127.0.0.1":
        return {}
    return {"host": proxy.host, "net": net}


# --- throughput, ping-pong, connection setup ------------------------------------------------------


def load_cell(scenario: Scenario, target: Target, env: CellEnv) -> Record:
    size = scenario.size(env.quick)
    with _server(env) as server, target.running(env.cell_dir, server.ports, env.proxy) as proxy:
        extra = {"users": size.users} if size.users else None
        if size.users:  # warm-up: every user connects once, so the timed window sees returning users only
            warm = run_loadgen(loadgen_argv(env.binaries, env.load_cpus, proxy.port, scenario.mode, size.conns,
                                            WARMUP_MAX_S, env.cookie_prefix, {**(extra or {}), "max-ops": size.users},
                                            **_where(env, proxy)),
                               WARMUP_MAX_S)
            if warm["errors"] or warm["ops"] != size.users:
                raise BenchError(f"{scenario.name} warm-up: {warm['ops']} of {size.users} users connected "
                                 f"({warm['first_error'] or 'no error'})")
        argv = loadgen_argv(env.binaries, env.load_cpus, proxy.port, scenario.mode, size.conns, size.duration_s,
                            env.cookie_prefix, extra, **_where(env, proxy))
        before = Usage.now(proxy, server)
        result = run_loadgen(argv, size.duration_s)
        used = Usage.now(proxy, server).minus(before)
    return {
        "mb_per_s": result["mb_per_s"],
        "ops_per_s": result["ops_per_s"],
        "lat_p50_ms": result["lat_p50_us"] / 1000,
        "lat_p99_ms": result["lat_p99_us"] / 1000,
        "lat_max_ms": result["lat_max_us"] / 1000,
        "ops": result["ops"],
        "window_s": result["window_s"],
        **used.percentages(result, env, has_proxy=proxy.proc is not None),
        **_errors(result, expected=size.conns if scenario.mode != "setup" else None),
        **proxy.notes,  # what the target checked after the load (rdpb1t: the address the servers saw)
    }


@dataclass(frozen=True)
class Usage:
    """CPU seconds of the proxy and the test server, and per-core busy/total jiffies."""

    proxy_s: float
    server_s: float
    cores: dict[int, tuple[int, int]]

    @classmethod
    def now(cls, proxy: Running, server: TestServer) -> Usage:
        proxy_s = procs.cpu_s(proxy.pid) if proxy.pid is not None else 0.0
        return cls(proxy_s, server.cpu_s(), procs.cpu_times())

    def minus(self, before: Usage) -> Usage:
        cores = {c: (b - before.cores[c][0], t - before.cores[c][1]) for c, (b, t) in self.cores.items()}
        return Usage(self.proxy_s - before.proxy_s, self.server_s - before.server_s, cores)

    def percentages(self, result: Record, env: CellEnv, has_proxy: bool) -> Record:
        """In % of one core over the load generator's run (its own CPU time comes from its result)."""
        wall = result["wall_s"] or 1e-9
        loadgen_s = result["cpu_user_s"] + result["cpu_sys_s"]
        zero = dict.fromkeys(self.cores, (0, 0))
        return {
            "proxy_cpu_pct": 100 * self.proxy_s / wall if has_proxy else None,
            # setup: the proxy's CPU (user + sys) per connection; it opens none outside the window
            "proxy_us_per_op": 1e6 * self.proxy_s / result["ops"] if has_proxy and result["ops"] else None,
            "load_cpu_pct": 100 * (loadgen_s + self.server_s) / wall,
            "loadgen_cpu_pct": 100 * loadgen_s / wall,
            "server_cpu_pct": 100 * self.server_s / wall,
            "proxy_core_busy_pct": procs.busy_pct(zero, self.cores, env.proxy.cpus),
            "load_core_busy_pct": procs.busy_pct(zero, self.cores, env.load_cpus),
        }


def _errors(result: Record, expected: int | None) -> Record:
    errors, first = result["errors"], result["first_error"]
    if expected is not None and result["established"] != expected and not errors:
        errors, first = 1, f"{result['established']} of {expected} sessions established"
    if result.get("timed_out"):
        errors, first = max(errors, 1), first or "load generator timed out"
    return {"errors": errors, "first_error": first}


# --- memory per idle session ---------------------------------------------------------------------


def sessions_that_fit(wanted: int, fd_limit: int) -> int:
    """A proxied session holds 2 descriptors in the proxy, and the hard limit cannot be raised."""
    return max(1, min(wanted, (fd_limit - SESSION_FD_RESERVE) // 2))


def memory_cell(scenario: Scenario, target: Target, env: CellEnv) -> Record:
    sessions = sessions_that_fit(scenario.size(env.quick).conns, env.proxy.fd_limit)
    warmup = min(WARMUP_SESSIONS, sessions)
    with _server(env) as server, target.running(env.cell_dir, server.ports, env.proxy) as proxy:
        assert proxy.pid is not None
        idle_sockets = procs.open_sockets(proxy.pid)
        warm = run_loadgen(_idle_argv(env, proxy, warmup, "w", hold_s=0), 60)
        _settle(proxy.pid, lambda n: n <= idle_sockets + PROBE_SOCKETS, "warm-up sessions to close")
        rss_before = procs.rss_kb(proxy.pid)
        with HeldLoad(_idle_argv(env, proxy, sessions, "m", HOLD_MAX_S), HOLD_MAX_S) as held:
            ready = held.wait_ready()
            _settle(proxy.pid, lambda n: n >= 2 * ready["established"], "sessions to open")
            rss_after = procs.rss_kb(proxy.pid)
            result = held.release()
    growth_kib = rss_after - rss_before
    return {
        "sessions": sessions,
        "kib_per_session": growth_kib / sessions,
        "rss_growth_mb": growth_kib / 1024,
        "rss_before_mb": rss_before / 1024,
        "rss_after_mb": rss_after / 1024,
        **_errors(_merge_errors(warm, result), expected=sessions),
    }


def _idle_argv(env: CellEnv, proxy: Running, sessions: int, tag: str, hold_s: float) -> list[str]:
    return loadgen_argv(env.binaries, env.load_cpus, proxy.port, "idle", sessions, hold_s, env.cookie_prefix + tag,
                        {"timeout": hold_s + 120, "burst": 256}, **_where(env, proxy))


def _merge_errors(warm: Record, held: Record) -> Record:
    """The held sessions' result (sessions that died while held count among its errors), carrying
    the warm-up's error when only the warm-up had one."""
    if warm["errors"] and not held["errors"]:
        return {**held, "errors": warm["errors"], "first_error": "warm-up: " + warm["first_error"]}
    return held


def _settle(pid: int, done: Callable[[int], bool], what: str) -> None:
    """Wait until the proxy's count of open sockets says `what` has happened."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not done(procs.open_sockets(pid)):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what} (proxy has {procs.open_sockets(pid)} sockets)")
        time.sleep(SETTLE_POLL_S)


# --- start-up with a large sticky table ------------------------------------------------------------


def startup_cell(scenario: Scenario, target: Target, env: CellEnv) -> Record:
    entries = scenario.size(env.quick).conns
    assert env.sticky_source is not None
    opts = replace(env.proxy, rdpb_log_level="info")  # no sessions here; the start-up line counts entries
    with _server(env) as server:
        with target.running(env.cell_dir / "empty", server.ports, opts) as empty:
            assert empty.pid is not None
            empty_rss = procs.rss_kb(empty.pid)
        db = fresh_copy(env.sticky_source, env.cell_dir / "sticky-full.db")
        with target.running(env.cell_dir / "full", server.ports, opts, db=db) as full:
            assert full.pid is not None and full.log is not None
            rss, hwm = procs.rss_kb(full.pid), procs.hwm_kb(full.pid)
    loaded = _entries_loaded(full.log)
    return {
        "entries": entries,
        "entries_loaded": loaded,
        "start_s": full.start_s,
        "start_empty_s": empty.start_s,
        "rss_mb": rss / 1024,
        "hwm_mb": hwm / 1024,
        "rss_empty_mb": empty_rss / 1024,
        "bytes_per_entry": (rss - empty_rss) * 1024 / entries,
        "errors": int(loaded is not None and loaded != entries),
        "first_error": f"{loaded} of {entries} sticky entries loaded" if loaded not in (None, entries) else "",
    }


def _entries_loaded(log: Path) -> int | None:
    """The count in rdpbalancer's "sticky table ...: N entries loaded" line (None if not found:
    the line is a check on the fixture, not something to fail the benchmark over)."""
    found = re.search(r"sticky table .*?: (\d+) entries loaded", log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


# --- the RDP session model: F-office, F-storm, F-video -------------------------------------------


def session_cell(scenario: Scenario, target: Target, env: CellEnv) -> Record:
    """rdpb_sessions through the target: latencies over the window, the proxy's CPU over the same
    window (sampled when the load generator announces its start and end), its RSS at the end."""
    size, spec = scenario.size(env.quick), scenario.session
    assert spec is not None
    storm_s = min(spec.storm_s, QUICK_STORM_S) if env.quick else spec.storm_s
    warmup_s = 0.2 if env.quick else spec.warmup_s
    options: dict[str, Any] = {
        "sessions": size.conns, "duration": f"{size.duration_s:g}", "warmup": f"{warmup_s:g}",
        "cookie-prefix": spec.cookie_prefix or env.cookie_prefix, "mix": ",".join(f"{m:g}" for m in spec.mix),
        "pinned-video": spec.pinned_video, "burst": 64, "seed": 26,
        "timeout": f"{(10 if env.quick else SESSION_SETUP_S) + warmup_s + size.duration_s + 3 * storm_s:g}",
    }
    if storm_s:
        options["storm"] = f"{storm_s:g}"
    timeout_s = float(options["timeout"])
    with _server(env) as server, target.running(env.cell_dir, server.ports, env.proxy) as proxy, \
            SessionLoad(sessions_argv(env.binaries, env.load_cpus, proxy.port, options, **_where(env, proxy)),
                        timeout_s) as load:
        if not load.wait_event("window_start"):
            return _session_record(load.finish(), None, None, env, proxy, size.conns)
        ours = {os.getpid(), load.pid, *procs.tree(server.pid), *(procs.tree(proxy.pid) if proxy.pid else [])}
        others_before = procs.others_cpu(ours)
        steal_before = procs.steal_ticks()
        before = Usage.now(proxy, server)
        loadgen_before = procs.cpu_s(load.pid)
        load.wait_event("window_end")
        used = Usage.now(proxy, server).minus(before)
        loadgen_s = procs.cpu_s(load.pid) - loadgen_before
        others_s = procs.others_cpu_delta(others_before, procs.others_cpu(ours))
        steal_after = procs.steal_ticks()
        rss = procs.rss_kb(proxy.pid) if proxy.pid is not None else None
        if spec.kill_proxy and load.wait_event("drop"):
            with _killed_and_restarted(target, proxy, env) as restart_s:
                result = load.finish()
        else:
            restart_s = None
            result = load.finish()
    record = {**_session_record(result, used, loadgen_s, env, proxy, size.conns, rss), **proxy.notes}
    # other people's processes during the window, in % of one core (of all CPUs, not just ours)
    window_s = result.get("window_s") or 1e-9
    record["others_cpu_pct"] = 100 * others_s / window_s
    # the hypervisor's steal on the proxy's CPUs during the window, % of one core
    record["proxy_steal_pct"] = 100 * sum(steal_after.get(c, 0) - steal_before.get(c, 0)
                                          for c in env.proxy.cpus) / procs.CLOCK_TICKS / window_s
    if spec.kill_proxy:
        record["restart_s"] = restart_s
    return record


@contextmanager
def _killed_and_restarted(target: Target, proxy: Running, env: CellEnv) -> Iterator[float]:
    """F-failover: SIGKILL the proxy (all its processes), start it again on the same configuration
    and port (rdpbalancer: the same sticky file); yields the seconds until it accepts again."""
    assert proxy.proc is not None and proxy.log is not None
    started = time.monotonic()
    for pid in [*procs.descendants(proxy.proc.pid), proxy.proc.pid]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proxy.proc.wait()
    config_path = env.cell_dir / target.config_filename
    with proxy.log.open("ab") as out:
        again = subprocess.Popen(procs.pinned(env.proxy.cpus, target.argv(config_path)), stdout=out,
                                 stderr=subprocess.STDOUT, env=child_env())
    try:
        procs.wait_accepting(proxy.port, again, RESTART_TIMEOUT_S, proxy.log, host=proxy.host)
        yield time.monotonic() - started
    finally:
        procs.stop(again)


def _ms(lat: Record, name: str, key: str) -> float | None:
    entry = lat.get(name) or {}
    return entry[key] / 1000 if entry.get("count") else None


def _session_record(result: Record, used: Usage | None, loadgen_s: float | None, env: CellEnv, proxy: Running,
                    sessions: int, rss_kb: int | None = None) -> Record:
    lat = result.get("lat", {})
    window = result.get("window_s") or 1e-9
    has_proxy = proxy.proc is not None
    record: Record = {
        "sessions": sessions,
        "established": result["established"],
        "in_p50_ms": _ms(lat, "input", "p50_us"), "in_p99_ms": _ms(lat, "input", "p99_us"),
        "in_p999_ms": _ms(lat, "input", "p999_us"), "in_max_ms": _ms(lat, "input", "max_us"),
        "inputs_measured": (lat.get("input") or {}).get("count", 0),
        **{f"{kind}_p99_ms": _ms(lat, kind, "p99_us") for kind in ("typing", "mouse", "scroll", "heartbeat")},
        "frame_p50_ms": _ms(lat, "frame", "p50_us"), "frame_p99_ms": _ms(lat, "frame", "p99_us"),
        "burst_p99_ms": _ms(lat, "burst", "p99_us"),
        "setup_p99_ms": _ms(lat, "setup", "p99_us"),
        "frames_skipped_pct": (100 * result["frames_skipped"] / result["frames_asked"]
                               if result["frames_asked"] else None),
        "bursts_skipped": result["bursts_skipped"],
        "mb_per_s": result["mb_per_s_in_window"],
        "window_s": result["window_s"],
        "per_backend": result["per_backend"][:BACKENDS],
        "states_at_window_start": result.get("states_at_window_start"),
    }
    if used is not None:
        proxy_pct = 100 * used.proxy_s / window if has_proxy else None
        zero = dict.fromkeys(used.cores, (0, 0))
        record.update({
            "proxy_cpu_pct": proxy_pct,
            "proxy_cpu_per_1k_pct": proxy_pct * 1000 / sessions if proxy_pct is not None else None,
            "rss_mb": rss_kb / 1024 if rss_kb is not None else None,
            "loadgen_cpu_pct": 100 * (loadgen_s or 0.0) / window,
            "server_cpu_pct": 100 * used.server_s / window,
            "proxy_core_busy_pct": procs.busy_pct(zero, used.cores, env.proxy.cpus),
            "load_core_busy_pct": procs.busy_pct(zero, used.cores, env.load_cpus),
        })
    storm = result.get("storm")
    if storm:
        record.update({
            "storm_users": storm["users"], "storm_back": storm["back"], "storm_lost": storm["lost"],
            "storm_refusals": storm["refusals"], "storm_moved": storm["moved"], "storm_same": storm["same_backend"],
            "storm_all_back_s": storm["all_back_s"], "storm_within_s": storm["within_s"],
            "reconnect_p50_ms": _ms(lat, "reconnect", "p50_us"), "reconnect_p99_ms": _ms(lat, "reconnect", "p99_us"),
            "per_backend_after": result["per_backend_after"][:BACKENDS],
        })
    errors = _errors(result, expected=sessions)
    if used is None and not errors["errors"]:
        errors = {"errors": 1, "first_error": "the measured window never started"}
    return {**record, **errors}
