"""Every Prometheus metric, defined once. Names follow Prometheus conventions (`rdpbalancer_`,
base units, `_total` for counters).

Most values are read from the running balancer at scrape time (a custom collector), so the relay
path pays nothing for them. The latency histograms observed per connection (`Latencies`) keep
their samples in a list that reaches the histogram at the next scrape (or every FOLD_EVERY
samples): a list append instead of a lock, a bucket search and a few counter updates.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rdpbalancer import __version__
from rdpbalancer.health.probes import ProbeResult
from rdpbalancer.policy.limits import Refusal
from rdpbalancer.ports import HA_ROLES, ReadModel

P = "rdpbalancer_"
# latency buckets in seconds: a LAN connect is ~0.2 ms, a slow WAN client's CR can take seconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FOLD_EVERY = 1024  # samples held before they are folded into the histogram without a scrape
ROUTED = ("sticky-hit", "session", "no-session", "new", "failover", "routing-token", "no-cookie")


class Latencies:
    """A histogram observed on the connection path: `observe` appends, `fold` (at each scrape,
    and every FOLD_EVERY samples) hands the samples to the Prometheus histogram."""

    __slots__ = ("histogram", "pending")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.pending: list[float] = []

    def observe(self, seconds: float) -> None:
        pending = self.pending
        pending.append(seconds)
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        pending, self.pending = self.pending, []
        observe = self.histogram.observe
        for seconds in pending:
            observe(seconds)


class Histograms:
    """The histograms observed as things happen (connections, health checks): made before the
    components that observe them; `Metrics` exports them with the state read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.handshake = Latencies(Histogram(P + "handshake_duration_seconds",
                                             "Time from accept to a complete Connection Request",
                                             buckets=LATENCY_BUCKETS, registry=self.registry))
        self.backend_connect = Latencies(Histogram(P + "backend_connect_duration_seconds",
                                                   "Time to open a TCP connection to a server (successful attempts)",
                                                   buckets=LATENCY_BUCKETS, registry=self.registry))
        self.health_check = Histogram(P + "health_check_duration_seconds", "Duration of active health checks",
                                      ["check"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def health_checked(self, kind: str, result: ProbeResult) -> None:
        self.health_check.labels(kind).observe(result.latency_s)


class Metrics:
    def __init__(self, view: ReadModel, histograms: Histograms) -> None:
        self.histograms = histograms
        self.registry = histograms.registry
        self.registry.register(_StateCollector(view))

    def exposition(self) -> bytes:
        self.histograms.handshake.fold()
        self.histograms.backend_connect.fold()
        return generate_latest(self.registry)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, labels=labels)


class _StateCollector(Collector):
    def __init__(self, view: ReadModel) -> None:
        self.bal = view

    def collect(self) -> Iterator[Metric]:
        yield from self._build()
        yield from self._connections()
        yield from self._servers()
        yield from self._sticky()
        yield from self._directory_and_config()
        yield from self._host_sessions()
        yield from self._ha()

    def _build(self) -> Iterator[Metric]:
        info = _gauge("build_info", "rdpbalancer version", ["version"])
        info.add_metric([__version__], 1)
        yield info

    def _connections(self) -> Iterator[Metric]:
        stats = self.bal.stats()
        conns = _counter("connections", "Client connections by result: routed reasons, or why they were refused",
                         ["result"])
        for result, n in sorted(stats.connections.items()):
            conns.add_metric([result], n)
        yield conns
        malformed = _counter("malformed_requests", "First packets that were not a valid Connection Request",
                             ["kind"])
        for kind, n in sorted(stats.malformed.items()):
            malformed.add_metric([kind], n)
        yield malformed
        refused = _counter("connections_refused", "Connections refused by a [limits] limit, or from an untrusted "
                           "address on a PROXY protocol listener", ["reason"])
        known = {str(r): 0 for r in Refusal} | {"untrusted-proxy": 0}  # exported at 0: rate() works at once
        for reason, n in sorted((known | dict(stats.refused)).items()):
            refused.add_metric([reason], n)
        yield refused
        failures = _counter("backend_connect_failures", "Failed connects to servers", ["server"])
        for server, n in sorted(stats.connect_failures.items()):
            failures.add_metric([server], n)
        yield failures
        sources = _counter("backend_connections", "Connections opened to servers, by the address the server saw: "
                           "the client's (transparent mode) or the balancer's own", ["seen"])
        for seen, n in sorted(({"client": 0, "balancer": 0} | dict(stats.backend_sources)).items()):
            sources.add_metric([seen], n)
        yield sources
        live = [s for s in self.bal.sessions.values() if s.relaying]
        up = stats.bytes_up + sum(s.bytes_up for s in live)
        down = stats.bytes_down + sum(s.bytes_down for s in live)
        relayed = _counter("bytes", "Bytes relayed", ["direction"])
        relayed.add_metric(["client_to_server"], up)
        relayed.add_metric(["server_to_client"], down)
        yield relayed
        active = _gauge("sessions_active", "Sessions being relayed", ["pool", "server"])
        by_target = Counter((s.decision.pool or "" if s.decision else "", s.server.name if s.server else "")
                            for s in live)
        for (pool, server), n in sorted(by_target.items()):
            active.add_metric([pool, server], n)
        yield active
        yield GaugeMetricFamily(P + "handshakes_pending", "Connections still sending their Connection Request",
                                value=self.bal.handshaking())
        # leak detectors: both return to their idle value once the connections are gone
        yield GaugeMetricFamily(P + "event_loop_tasks", "asyncio tasks alive in this process",
                                value=_tasks_alive())
        yield GaugeMetricFamily(P + "limits_tracked_sources", "Client addresses the limits hold state for",
                                value=self.bal.tracked_sources())

    def _servers(self) -> Iterator[Metric]:
        routing = self.bal.routing()
        up = _gauge("server_up", "1 when health checks say the server is up (or unknown), 0 when down", ["server"])
        state = _gauge("server_admin_state", "1 for the server's current admin state", ["server", "state"])
        homed = _gauge("server_homed_users", "Unexpired sticky entries pointing at the server", ["server"])
        conns = _gauge("server_connections", "Open and opening connections to the server", ["server"])
        weight = _gauge("server_weight", "Weight of the server in each pool", ["pool", "server"])
        eweight = _gauge("server_effective_weight", "Weight the server has now for new users: its weight, "
                         "or less while it ramps up after slowstart began", ["pool", "server"])
        backup = _gauge("server_backup", "1 for a backup server (new users only while no other server of the "
                        "pool takes them)", ["pool", "server"])
        on_backup = _gauge("pool_on_backup", "1 while new users of the pool go to its backup servers",
                           ["pool"])
        cap = _gauge("server_max_sessions", "max_sessions of the server in each pool (only where one is set); "
                     "compare with server_connections (leastconn) or server_homed_users (leastsessions)",
                     ["pool", "server"])
        for name in self.bal.snapshot.policy.servers():
            server = routing.servers[name]
            cond = server.condition
            up.add_metric([name], 1 if cond.up else 0)
            for s in ("ready", "drain", "maint"):
                state.add_metric([name, s], 1 if cond.admin == s else 0)
            homed.add_metric([name], server.homed_users)
            conns.add_metric([name], server.connections)
        shares = {name: s.ramp[0] for name, s in routing.servers.items()
                  if name in routing.policy.slowstart and s.ramp is not None}
        for pool in routing.policy.pools:
            for m in pool.members:
                weight.add_metric([pool.name, m.server.name], m.weight)
                eweight.add_metric([pool.name, m.server.name], round(m.weight * shares.get(m.server.name, 1.0), 3))
                backup.add_metric([pool.name, m.server.name], 1 if m.backup else 0)
                if m.max_sessions is not None:
                    cap.add_metric([pool.name, m.server.name], m.max_sessions)
            on_backup.add_metric([pool.name], 1 if routing.on_backup[pool.name] else 0)
        yield from (up, state, homed, conns, weight, eweight, backup, on_backup, cap)

    def _sticky(self) -> Iterator[Metric]:
        table, store, stats = self.bal.sticky_counts(), self.bal.store_health(), self.bal.stats().connections
        yield GaugeMetricFamily(P + "sticky_entries", "Entries in the sticky table", value=table.entries)
        lookups = _counter("sticky_lookups", "Routing decisions for users: hit = back to their server", ["result"])
        lookups.add_metric(["hit"], stats["sticky-hit"])
        lookups.add_metric(["miss"], stats["new"])
        yield lookups
        yield CounterMetricFamily(P + "sticky_reassignments", "Users moved off a down or maintenance server",
                                  value=stats["failover"])
        yield CounterMetricFamily(P + "sticky_evictions", "Entries evicted because the table was full",
                                  value=table.evictions)
        yield CounterMetricFamily(P + "sticky_expirations", "Entries dropped because their ttl passed",
                                  value=table.expirations)
        writes = _counter("sticky_store_commits", "Sticky store transactions", ["result"])
        writes.add_metric(["success"], store.commits)
        writes.add_metric(["failure"], store.failures)
        yield writes
        if store.shared:
            yield GaugeMetricFamily(P + "sticky_store_shared_up", "1 when the shared store (Redis) answers",
                                    value=1 if store.available else 0)
            yield CounterMetricFamily(P + "sticky_store_conflicts", "Users another node had placed first (or "
                                      "differently during an outage)", value=store.conflicts)
        yield GaugeMetricFamily(P + "sticky_store_unsaved_changes",
                                "Changes kept in memory because writing the sticky file failed",
                                value=store.unsaved)

    def _directory_and_config(self) -> Iterator[Metric]:
        bal = self.bal
        status = bal.directory_status()
        yield GaugeMetricFamily(P + "directory_sync_ok", "1 when the last directory fetch succeeded",
                                value=0 if status.last_error else 1)
        if status.age_s is not None:
            yield GaugeMetricFamily(P + "directory_data_age_seconds", "Age of the group membership in use",
                                    value=status.age_s)
        if status.last_success is not None:
            yield GaugeMetricFamily(P + "directory_last_success_timestamp_seconds",
                                    "When the directory last answered", value=status.last_success)
        reloads = _counter("config_reloads", "Configuration reloads", ["result"])
        reloads.add_metric(["success"], bal.config_status.reloads_ok)
        reloads.add_metric(["failure"], bal.config_status.reloads_failed)
        yield reloads
        yield GaugeMetricFamily(P + "config_last_reload_ok", "0 while the last reload attempt failed",
                                value=0 if bal.config_status.last_reload_error else 1)
        routing = bal.routing()
        yield CounterMetricFamily(P + "truncated_cookie_ambiguities",
                                  "Truncated cookies standing for users that route differently",
                                  value=routing.ambiguous)
        yield CounterMetricFamily(P + "session_name_ambiguities",
                                  "Cookies without a domain that the hosts list under several domains "
                                  "(the sticky entry stands)", value=routing.ambiguous_names)


    def _host_sessions(self) -> Iterator[Metric]:
        directory = self.bal.host_sessions()
        sessions = _gauge("host_sessions", "Sessions the host itself reports (session directory)", ["server", "state"])
        up = _gauge("session_source_up", "1 while the host's session list is fresh (answered within stale_after)",
                    ["server"])
        age = _gauge("session_source_age_seconds", "Age of the host's last session list", ["server"])
        failures = _counter("session_source_failures", "Failed session queries", ["server"])
        for host in directory.hosts:
            server, report = host.source.server, host.report
            listed = report.sessions if report is not None else ()
            for state in ("active", "disconnected"):
                sessions.add_metric([server, state], sum(1 for x in listed if x.state == state))
            up.add_metric([server], 1 if host.fresh else 0)
            if host.age_s is not None:
                age.add_metric([server], host.age_s)
            failures.add_metric([server], host.failures)
        yield from (sessions, up, age, failures)
        yield GaugeMetricFamily(P + "duplicate_sessions", "Users with sessions on more than one host",
                                value=len(directory.duplicates))

    def _ha(self) -> Iterator[Metric]:
        ha = self.bal.ha_state()
        if ha is None:  # no [admin] ha_state_file: not part of a keepalived pair
            return
        state = _gauge("ha_state", "1 for this node's VRRP state as keepalived's notify hook last wrote it "
                       "(master: holds the virtual IP); all 0 while unknown", ["state"])
        for name in HA_ROLES:
            state.add_metric([name], 1 if ha.state == name else 0)
        yield state


def _tasks_alive() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # collected outside the loop (registration at construction)
        return 0
