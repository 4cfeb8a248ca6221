"""The farm simulator's trace and the invariants checked over it (issue 26, part 2).

Pure: events come in as they happen (`Checker.feed`), in the order the simulator saw them, with
the simulator's own clock (seconds since the run started, real time). The checker keeps the
ground truth of the farm (which host holds which user's session or pending logon: the simulated
hosts' own state, not what they pushed) and the outages the simulator caused, and judges every
landing and every logon against them. `tests/farm/test_farm_day.py` feeds it a crafted violating
trace too: an invariant that cannot fail is a defect.

The invariants (the issue's numbering):
  1. a user who has a session (connected or disconnected) or a pending logon on a host is sent
     to that host, unless it is down past `failover_after` or in maintenance (and is not turned
     away without an answer while that host answers and the node's processes run);
  2. no routing decision gives a user a second session while she has one (a logon started on a
     host while she has a session or a pending logon on another, with no such excuse);
  3. no sticky entry of a user who reached a host is lost (checked while she has no connection
     in flight: her entry exists and names the host she last reached, or one where she has a
     session: the session rule corrects the entry when it decides, before she gets there);
  4. counts return to zero when idle; file descriptors flat;
  5. every refusal and every move names its reason (the log's `routed` line of a move gives
     session, no-session or failover; the refusals the clients saw are logged with a reason).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PENDING, ACTIVE, DISCONNECTED = "pending", "active", "disconnected"
MOVE_REASONS = frozenset({"session", "no-session", "failover"})


def _names_the_move(line: dict[str, str], host: str) -> bool:
    """A routed line that took her to `host` with a move's reason, or a rejected one whose reason
    names her session there."""
    if line.get("reason") == "rejected":
        return _names_a_session(line, host)
    return line.get("reason") in MOVE_REASONS and line.get("server") == host


def _names_a_session(line: dict[str, str], host: str) -> bool:
    """A refused connection's reason that names her session on `host` (the session rule decided,
    and corrected her entry, before every connect failed): "... (session 16 (disconnected) on TS04"."""
    return bool(re.search(rf"session \S+ \(\w+\) on {re.escape(host)}\b|duplicate sessions on .*\b{re.escape(host)}\b",
                          line.get("detail", "")))


@dataclass
class Event:
    t: float
    kind: str
    fields: dict[str, Any]

    def text(self) -> str:
        return f"{self.t:9.3f} {self.kind:<14} " + " ".join(f"{k}={v}" for k, v in self.fields.items())


@dataclass
class Violation:
    invariant: str
    t: float
    user: str | None
    what: str


@dataclass
class Outage:
    """A host's RDP port closed (a health flap or a reboot) from `start` to `end` (None: still)."""

    start: float
    end: float | None = None


@dataclass
class Checker:
    """Judges the trace as it comes. `failover_after_s`: the balancer's setting (real seconds);
    `recover_s`: how long after a host is back the balancer may still treat it as down (its
    `rise` checks); `detect_slack_s`: timing slack at the edges (a loaded machine)."""

    failover_after_s: float
    recover_s: float = 3.0
    stale_after_s: float = 6.0  # a host's list older than this is no evidence (the balancer's setting)
    detect_slack_s: float = 0.5
    events: list[Event] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    # user -> host -> pending/active/disconnected: the hosts' own truth
    truth: dict[str, dict[str, str]] = field(default_factory=dict)
    outages: dict[str, list[Outage]] = field(default_factory=dict)
    maint: dict[str, list[Outage]] = field(default_factory=dict)  # admin state maint (or a drain) from..to
    silent: dict[str, list[Outage]] = field(default_factory=dict)  # a host that stopped pushing its list
    last_host: dict[str, str] = field(default_factory=dict)  # the host each user last reached
    # t, user, from, to, its client address, when she landed before
    moves: list[tuple[float, str, str, str, str | None, float]] = field(default_factory=list)
    clients: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # user -> (t, client address)
    landed_at: dict[str, float] = field(default_factory=dict)
    denied: list[tuple[float, str, str, str | None]] = field(default_factory=list)  # t, user, host, client
    deny_on: dict[str, float] = field(default_factory=dict)  # host -> deny_new since
    deny_since: dict[tuple[str, float], float] = field(default_factory=dict)  # (host, landing t) -> since
    connects: dict[int, tuple[float, dict[str, str]]] = field(default_factory=dict)  # cid -> start, truth
    # two nodes sharing a Redis table: Redis's outages, and each user's node and time of her last
    # landing and of her connect under way, and every host she reached
    redis_out: list[Outage] = field(default_factory=list)
    last_landing: dict[str, tuple[str, float]] = field(default_factory=dict)
    connecting: dict[str, str] = field(default_factory=dict)
    connect_user: dict[int, str] = field(default_factory=dict)  # cid -> user, while the connect is in flight
    reached: dict[str, set[str]] = field(default_factory=dict)
    excuses: Counter[str] = field(default_factory=Counter)
    node_events: list[float] = field(default_factory=list)  # a node process killed, replaced, moved
    node_busy_since: float | None = None

    # -- the trace ------------------------------------------------------------------------------

    def feed(self, t: float, kind: str, **fields: Any) -> None:
        self.events.append(Event(t, kind, fields))
        self.kinds[kind] += 1
        handler = getattr(self, "_on_" + kind, None)
        if handler is not None:
            handler(t, **fields)

    def violate(self, invariant: str, t: float, user: str | None, what: str) -> None:
        self.violations.append(Violation(invariant, t, user, what))
        self.events.append(Event(t, "VIOLATION", {"invariant": invariant, "user": user, "what": what}))

    # -- host truth -----------------------------------------------------------------------------

    def _on_logon_start(self, t: float, user: str, host: str, **_: Any) -> None:
        self.checks["inv2"] += 1
        others = {h: s for h, s in self.truth.get(user, {}).items() if h != host}
        # judged over the connect that brought her, from its start: the balancer decided then (a
        # host in maintenance when she was routed and ready again when her logon began is excused)
        started = min((at for cid, (at, _) in self.connects.items() if self.connect_user.get(cid) == user), default=t)
        if others and not self.excused(others, started, t) and not self.split(user, self.connecting.get(user), t):
            self.violate("2-second-session", t, user,
                         f"a logon started on {host} while she has {self._fmt(others)}")
        self.truth.setdefault(user, {})[host] = PENDING

    def _on_logon_done(self, t: float, user: str, host: str, state: str, **_: Any) -> None:
        self.truth.setdefault(user, {})[host] = state

    def _on_session_state(self, t: float, user: str, host: str, state: str, **_: Any) -> None:
        if host in self.truth.get(user, {}):
            self.truth[user][host] = state

    def _on_logoff(self, t: float, user: str, host: str, **_: Any) -> None:
        self.truth.get(user, {}).pop(host, None)

    def _on_reboot(self, t: float, host: str, **_: Any) -> None:
        for sessions in self.truth.values():
            sessions.pop(host, None)
        self.outages.setdefault(host, []).append(Outage(t))

    def _on_port_closed(self, t: float, host: str, **_: Any) -> None:
        self.outages.setdefault(host, []).append(Outage(t))

    def _on_port_open(self, t: float, host: str, **_: Any) -> None:
        for o in self.outages.get(host, []):
            if o.end is None:
                o.end = t

    def _on_redis_down(self, t: float, **_: Any) -> None:
        self.redis_out.append(Outage(t))

    def _on_redis_up(self, t: float, **_: Any) -> None:
        for o in self.redis_out:
            if o.end is None:
                o.end = t

    def _on_admin_state(self, t: float, host: str, state: str, **_: Any) -> None:
        spans = self.maint.setdefault(host, [])
        if state == "maint":
            spans.append(Outage(t))
        else:
            for o in spans:
                if o.end is None:
                    o.end = t

    # -- clients ----------------------------------------------------------------------------------

    def _on_connect(self, t: float, user: str, cid: int, node: str | None = None, **_: Any) -> None:
        self.connects[cid] = (t, dict(self.truth.get(user, {})))
        self.connect_user[cid] = user
        if node is not None:
            self.connecting[user] = node

    def _on_deny_new(self, t: float, host: str, on: bool, **_: Any) -> None:
        if on:
            self.deny_on[host] = t
        else:
            self.deny_on.pop(host, None)

    def _on_landed(self, t: float, user: str, cid: int, host: str, node: str | None = None,
                   client: str | None = None, denied: bool = False, **_: Any) -> None:
        """She reached `host`: judged against her sessions when the connect started that still
        exist now (a reboot meanwhile takes hers away; a logon this very connect started on
        `host` is not one she had)."""
        self.checks["inv1"] += 1
        started, before = self.connects.pop(cid, (t, {}))
        self.connect_user.pop(cid, None)
        now = self.truth.get(user, {})
        had = {h: s for h, s in before.items() if h in now}
        if had and host not in had and not self.excused(had, started, t) and not self.split(user, node, t):
            self.violate("1-misrouted", t, user, f"sent to {host} while she has {self._fmt(had)}")
        previous = self.last_host.get(user)
        if client is not None:
            self.clients.setdefault(user, []).append((t, client))
        if previous is not None and previous != host:
            self.moves.append((t, user, previous, host, client, self.landed_at.get(user, 0.0)))
        self.landed_at[user] = t
        if denied:
            self.denied.append((t, user, host, client))
            if host in self.deny_on:
                self.deny_since[(host, t)] = self.deny_on[host]
        self.last_host[user] = host
        self.reached.setdefault(user, set()).add(host)
        if node is not None:
            self.last_landing[user] = (node, t)

    def _on_connect_end(self, t: float, cid: int, **_: Any) -> None:
        self.connects.pop(cid, None)
        self.connect_user.pop(cid, None)

    def _on_chaos(self, t: float, what: str, **_: Any) -> None:
        self.node_events.append(t)
        if what in ("node-kill", "clock-step-restart", "handoff", "vip-move"):
            self.node_busy_since = t

    def _on_node_done(self, t: float) -> None:
        self.node_events.append(t)
        self.node_busy_since = None

    def _on_node_restarted(self, t: float, **_: Any) -> None:
        self._on_node_done(t)

    def _on_handoff_done(self, t: float, **_: Any) -> None:
        self._on_node_done(t)

    def _on_vip_moved(self, t: float, **_: Any) -> None:
        self._on_node_done(t)

    def _on_worker_killed(self, t: float, **_: Any) -> None:
        self.node_events.append(t)

    def _on_connect_fail(self, t: float, user: str, cid: int, why: str, client: str | None = None,
                         **_: Any) -> None:
        """Closed before any answer while she has a session or a pending logon on a host that
        answers, is not in maintenance, and no process of the node was killed or replaced
        meanwhile: she was sent nowhere (invariant 1)."""
        started, before = self.connects.get(cid, (t, {}))
        if client is not None:
            self.clients.setdefault(user, []).append((t, client))
        if why != "refused":
            return
        self.checks["inv1-refusals"] += 1
        now = self.truth.get(user, {})
        had = {h: s for h, s in before.items() if h in now}
        if not had or self.node_busy_since is not None or any(started - 2.0 <= e <= t + 0.5 for e in self.node_events):
            return
        if self.redis_out and self._redis_out_during(started, t):
            return
        answering = [h for h in had if self._answering(h, started, t) and not self._in_maint(h, started, t)]
        known = [h for h in answering if not self._list_stale(h, started, t)]
        if answering and not known:
            # her session there is on a host whose list is older than stale_after: no evidence for
            # the balancer, which holds her for her entry's host (README: stale data is no evidence)
            self.excuses["1-refusal-session-only-on-a-silent-host"] += 1
            return
        if answering:
            self.violate("1-refused-with-a-session", t, user,
                         f"closed without an answer while she has {self._fmt(had)} ({', '.join(answering)} answers)")

    def _on_silent(self, t: float, host: str, **_: Any) -> None:
        self.silent.setdefault(host, []).append(Outage(t))

    def _on_speaks(self, t: float, host: str, **_: Any) -> None:
        for o in self.silent.get(host, []):
            if o.end is None:
                o.end = t

    def _list_stale(self, host: str, start: float, end: float) -> bool:
        """The host had stopped pushing long enough for its list to be no evidence during [start, end]."""
        return any(o.start + self.stale_after_s - self.detect_slack_s <= end and (o.end is None or o.end >= start)
                   for o in self.silent.get(host, []))

    def _answering(self, host: str, start: float, end: float) -> bool:
        """The host's port open all through [start - recover_s, end]."""
        return not any(o.start <= end and (o.end is None or o.end + self.recover_s >= start)
                       for o in self.outages.get(host, []))

    def _on_sticky(self, t: float, user: str, server: str | None, **_: Any) -> None:
        """The balancer's entry for `user`, read while she had no connection in flight."""
        self.checks["inv3"] += 1
        expected = self.last_host.get(user)
        if expected is not None and server != expected and server in self.reached.get(user, set()) \
                and user in self.last_landing and self._redis_out_during(self.last_landing[user][1], t):
            self.excuses["3-after-a-redis-outage"] += 1
            return
        if expected is not None and server != expected and server in self.truth.get(user, {}):
            # the session rule corrects an entry to the host with her session before she reaches it
            # (a duplicate left by a failover, say), and keeps it if that connect fails
            self.excuses["3-entry-names-her-session"] += 1
            return
        if expected is not None and server != expected:
            what = "lost" if server is None else f"names {server}"
            self.violate("3-sticky-lost", t, user, f"her entry {what}; she last reached {expected}")

    # -- the excuses ------------------------------------------------------------------------------

    def excused(self, had: dict[str, str], start: float, end: float) -> bool:
        """Some host of `had` was down past failover_after, or in maintenance, during [start, end]
        (with the balancer's lag in seeing it back)."""
        if any(self._down_past_failover(h, start, end) for h in had):
            self.excuses["1/2-down-past-failover_after"] += 1
            return True
        if any(self._in_maint(h, start, end) for h in had):
            self.excuses["1/2-maintenance"] += 1
            return True
        return False

    def split(self, user: str, node: str | None, t: float) -> bool:
        """Two nodes while Redis was away: she comes through another node than last time, and Redis
        was away since (the nodes route from their own copies; README: a user may then get two
        sessions, resolved by the conflict rule once Redis is back)."""
        last = self.last_landing.get(user)
        if node is None or last is None or last[0] == node or not self._redis_out_during(last[1], t):
            return False
        self.excuses["1/2-split-during-a-redis-outage"] += 1
        return True

    def _redis_out_during(self, start: float, end: float) -> bool:
        return any(o.start <= end and (o.end is None or o.end + 3.0 >= start) for o in self.redis_out)

    def _down_past_failover(self, host: str, start: float, end: float) -> bool:
        for o in self.outages.get(host, []):
            if o.start + self.failover_after_s > end + self.detect_slack_s:
                continue  # not down long enough by the end of this connect
            if o.end is None or o.end + self.recover_s >= start:
                return True
        return False

    def _in_maint(self, host: str, start: float, end: float) -> bool:
        return any(o.start <= end + self.detect_slack_s and (o.end is None or o.end + 1.0 >= start)
                   for o in self.maint.get(host, []))

    @staticmethod
    def _fmt(sessions: dict[str, str]) -> str:
        return ", ".join(f"{state} on {h}" for h, state in sorted(sessions.items()))

    # -- after the run ------------------------------------------------------------------------------

    def check_moves_logged(self, routed: list[dict[str, str]], t: float) -> None:
        """Invariant 5, moves: the `routed` line of the very connection (matched by its client
        address and port) that took her to another host than last time gives a move reason
        (session, no-session, failover): sticky-hit or new would mean her entry pointed elsewhere
        than where she was, or was gone; no line at all, that the move is not in the log."""
        by_client = {line.get("client", ""): line for line in routed}
        for at, user, frm, to, client, since in self.moves:
            self.checks["inv5-moves"] += 1
            line = by_client.get(client or "")
            if line is None:
                self.violate("5-move-unnamed", t, user, f"her move {frm} -> {to} at {at:.3f} (client {client}) "
                             "has no routed line in the log")
                continue
            # her connects since she last landed, and any in flight with this one (two clients at
            # once: the one that decided may not be the one that stayed or landed first); one of
            # them routed her there with the move's reason
            tried = [c for tc, c in self.clients.get(user, []) if since <= tc <= at + 2.0]
            named = [by_client.get(c) for c in tried]
            if not any(n is not None and _names_the_move(n, to) for n in named):
                self.violate("5-move-unnamed", t, user, f"her move {frm} -> {to} at {at:.3f} is logged as "
                             f"reason={line.get('reason')} server={line.get('server')}")

    def check_drain(self, routed: list[dict[str, str]], lag_s: float, t: float) -> None:
        """A host that has reported deny_new for `lag_s` (a push) takes no new user: no connection
        refused by it was placed there as new, no-session or failover."""
        by_client = {line.get("client", ""): line for line in routed}
        for at, user, host, client in self.denied:
            since = self.deny_since.get((host, at))
            line = by_client.get(client or "")
            if since is None or at - since < lag_s or line is None:
                continue
            if any(at - lag_s - 1.0 <= e <= at for e in self.node_events):
                continue  # a node restarted since: its first push may not have come yet
            self.checks["drain"] += 1
            if line.get("reason") in ("new", "no-session", "failover"):
                self.violate("drain-ignored", t, user, f"placed on {host} as {line.get('reason')} at {at:.3f}, "
                             f"{at - since:.1f}s after it reported deny_new")

    def check_refusals_logged(self, refused_seen: int, refused_logged: int, t: float) -> None:
        """Invariant 5, refusals: every connection the balancer closed before routing it (outside a
        kill of a balancer process) is in the log with a reason."""
        self.checks["inv5-refusals"] += refused_seen
        if refused_logged < refused_seen:
            self.violate("5-refusal-unnamed", t, None,
                         f"clients saw {refused_seen} refusal(s), the log names {refused_logged}")

    def check_idle(self, what: str, value: int, limit: int, t: float) -> None:
        """Invariant 4: a count read when idle."""
        self.checks["inv4"] += 1
        if value > limit:
            self.violate("4-not-idle", t, None, f"{what} = {value} when idle (at most {limit})")

    # -- the report ---------------------------------------------------------------------------------

    def trace_of(self, user: str | None, last: int = 60) -> list[str]:
        """The last events that name `user` (or every host event), for a violation's report."""
        rows = [e for e in self.events if user is None or e.fields.get("user") in (user, None)]
        return [e.text() for e in rows[-last:]]

    def summary(self) -> dict[str, Any]:
        return {
            "events": dict(sorted(self.kinds.items())),
            "checks": dict(sorted(self.checks.items())),
            "moves": len(self.moves),
            "excused": dict(self.excuses),
            "violations": Counter(v.invariant for v in self.violations),
        }

    def dump(self, path: str) -> None:
        with open(path, "w") as out:
            for e in self.events:
                out.write(json.dumps({"t": round(e.t, 3), "kind": e.kind, **e.fields}, default=str) + "\n")
