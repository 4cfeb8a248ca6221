"""The router: `decide(request, now) -> Decision`, the single place routing happens.

Pure: no I/O, no asyncio; the shell calls `decide`, then applies it with `assign` (remember the
user's server) and `opened`/`closed` (connection counts) with no `await` in between, so two
connections of one new user arriving together agree on one server.

`preview` answers the same question without changing anything (`explain`); `decide` is
`preview` followed by `commit`, which advances the pool's tie-break turn and the ambiguity
count. So a preview predicts the next real decision, and asking cannot steer anyone.

Server conditions (admin state, health) are read from `conditions`, which the health monitor
and the admin API update through `set_health` / `set_admin_state`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from rdpbalancer.policy import slowstart
from rdpbalancer.policy.balancing import Ranking, WeightedLeastLoad
from rdpbalancer.policy.host_sessions import (
    OPEN_ELSEWHERE_S,
    Evidence,
    SessionRules,
    Trust,
    choose,
    history,
)
from rdpbalancer.policy.identity import SOURCE_IP_PREFIX, printable, source_ip_key
from rdpbalancer.policy.limits import NewUserBudget, source_of
from rdpbalancer.policy.model import (
    AdminState,
    BalanceKind,
    Decision,
    NoCookiePolicy,
    Pool,
    PoolMember,
    Reason,
    RouteRequest,
    Server,
    ServerCondition,
)
from rdpbalancer.policy.ports import GroupMembership, NoGroups
from rdpbalancer.policy.rules import MatchInput, Route, Trace, first_match, parse_ip
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.policy.sticky import Change, StickyEntry, StickyTable

READY = ServerCondition()
# decisions a pool's ranking made
_BALANCED = frozenset({Reason.NEW, Reason.FAILOVER, Reason.NO_COOKIE, Reason.NO_SESSION})
_UNDONE = (Reason.NEW, Reason.FAILOVER, Reason.NO_SESSION)  # assignments forgotten when every connect failed


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The compiled, immutable part of the configuration the router needs."""

    pools: tuple[Pool, ...]
    no_cookie: NoCookiePolicy = NoCookiePolicy.SOURCE_IP
    max_connect_attempts: int = 3
    # How long a server must be down before its sticky users move (0: at once, inf: never).
    failover_after_s: float = 60.0
    # Evaluated in order; empty means "the first pool serves everyone".
    routes: tuple[Route, ...] = ()
    truncated_length: int = 0  # cookies of exactly this length may be cut login names; 0 = off
    # pool name -> the session directory's rules there; a pool missing here has no directory
    session_rules: Mapping[str, SessionRules] = field(default_factory=dict)
    # server name -> its slow-start window in seconds (policy/slowstart.py); missing: no ramp
    slowstart: Mapping[str, float] = field(default_factory=dict)
    # [limits] per_user_connections: open connections one user key may have; None: no limit
    per_user_connections: int | None = None
    # the table is shared with other nodes (Redis): their open connections are not counted here
    shared_table: bool = False

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    def servers(self) -> dict[str, Server]:
        return {m.server.name: m.server for p in self.pools for m in p.members}


_LOAD_WORD = {BalanceKind.LEASTCONN: "connections", BalanceKind.LEASTSESSIONS: "sessions"}


class Router:
    def __init__(self, policy: RoutingPolicy, table: StickyTable, *, new_users: NewUserBudget | None = None,
                 host_sessions: SessionDirectory | None = None) -> None:
        self.table = table
        self.connections: Counter[str] = Counter()  # server name -> open or opening connections
        self.external: Counter[str] = Counter()  # server name -> other balancer nodes' connections
        self.user_connections: Counter[str] = Counter()  # user key -> open or opening connections
        self.conditions: dict[str, ServerCondition] = {}
        self.membership: GroupMembership = NoGroups()
        self.ambiguous = 0  # truncated cookies whose candidate users would route differently
        self.ambiguous_names = 0  # cookies without a domain the hosts list under several domains
        self._rankings: dict[str, Ranking] = {}
        self._turns: Counter[str] = Counter()  # pool -> tie-break turn, advanced by commit only
        # [limits] new_users_per_source: invented user names from one address must not push real
        # users out of the table; None: no budget
        self.new_users = new_users
        # the hosts' own session lists (policy/host_sessions.py); None: no [sessions] source anywhere
        self.host_sessions = host_sessions
        self.policy = policy
        self.swap_policy(policy)

    def swap_policy(self, policy: RoutingPolicy, now: float | None = None) -> None:
        """Install a new policy (reload); sessions already relaying keep their decision.

        With `now`, a server that begins to take new users (added, or weighted above 0 again)
        starts its slow-start ramp, and a ramp under way keeps its progress if the window changed.
        """
        if now is not None and policy is not self.policy:
            self._ramps_across(self.policy, policy, now)
        self.policy = policy
        self._rankings = {p.name: self._rankings.get(p.name) or WeightedLeastLoad() for p in policy.pools}
        self._names = {p.name: tuple(m.server.name for m in p.members) for p in policy.pools}

    # -- server conditions -----------------------------------------------------------------

    def condition(self, server: str) -> ServerCondition:
        return self.conditions.get(server, READY)

    def set_admin_state(self, server: str, state: AdminState, now: float) -> bool:
        """The operator's state; True when the server now begins to take new users (a ramp)."""
        current = self.condition(server)
        return self._set(server, current, replace(current, admin=state), now)

    def set_health(self, server: str, up: bool, now: float) -> bool:
        """Health changed at `now`; True when the server now begins to take new users (a ramp)."""
        current = self.condition(server)
        if current.up == up:
            return False
        if up and self.host_sessions is not None:  # back from down: its old list may be from before a restart
            self.host_sessions.outdated(server, now)
        return self._set(server, current, replace(current, up=up, down_since=None if up else now), now)

    def _set(self, server: str, before: ServerCondition, after: ServerCondition, now: float) -> bool:
        began = _open_to_new(after) and not _open_to_new(before)
        if began:
            after = replace(after, ramp_from=now)
        elif not _open_to_new(after):
            after = replace(after, ramp_from=None)  # it ramps again from the start when it returns
        self.conditions[server] = after
        return began

    # -- slow start (policy/slowstart.py) ----------------------------------------------------------

    def _ramps_across(self, old: RoutingPolicy, new: RoutingPolicy, now: float) -> None:
        weighted_before = _weighted(old)
        for name in _weighted(new) - weighted_before:  # added by this reload, or weighted again
            cond = self.condition(name)
            if _open_to_new(cond):
                self.conditions[name] = replace(cond, ramp_from=now)
        for name, cond in list(self.conditions.items()):
            before, after = old.slowstart.get(name, 0.0), new.slowstart.get(name, 0.0)
            if cond.ramp_from is not None and before != after and name in weighted_before:
                self.conditions[name] = replace(cond, ramp_from=slowstart.rebase(cond.ramp_from, before, after, now))

    def ramp(self, server: str, now: float) -> tuple[float, float] | None:
        """(share of its weight, seconds left) while `server` is ramping, else None."""
        window = self.policy.slowstart.get(server, 0.0)
        ramp_from = self.condition(server).ramp_from
        done = slowstart.progress(ramp_from, window, now)
        if done >= 1.0:
            return None
        return slowstart.share(ramp_from, window, now), (1.0 - done) * window

    def _shares(self, pool: Pool, now: float) -> dict[str, float]:
        """Servers of `pool` that are ramping: name -> the share of their weight they have."""
        if not self.policy.slowstart:
            return {}
        out = {}
        for m in pool.members:
            ramp = self.ramp(m.server.name, now)
            if ramp is not None:
                out[m.server.name] = ramp[0]
        return out

    # -- deciding -------------------------------------------------------------------------

    def decide(self, request: RouteRequest, now: float, trace: Trace | None = None) -> Decision:
        """Where `request` goes, committed (see `commit`)."""
        decision = self.preview(request, now, trace)
        self.commit(decision, request, now)
        return decision

    def commit(self, decision: Decision, request: RouteRequest, now: float) -> None:
        """The decision is acted on: the next tie among its pool's servers goes to the next one,
        and a new user takes from their address's budget."""
        if decision.reason in _BALANCED and decision.pool is not None:
            self._turns[decision.pool] += 1
        if decision.ambiguous:
            self.ambiguous += 1
        if decision.name_ambiguous:
            self.ambiguous_names += 1
        if self.new_users is not None and decision.reason is Reason.NEW and decision.sticky_key is not None:
            self.new_users.take(source_of(request.client_host), now)

    def preview(self, request: RouteRequest, now: float, trace: Trace | None = None) -> Decision:
        """Where `request` would go now, changing nothing. With `trace`, every step is recorded."""
        route, ambiguous = self._route(request, now, trace)
        decision = self._decision(route, request, now, trace)
        limit = self.policy.per_user_connections
        user = counted_user(decision) if limit is not None and decision.candidates else None
        if limit is not None and user is not None and self.user_connections[user] >= limit:
            return Decision(Reason.PER_USER, pool=decision.pool, route=decision.route,
                            detail=f"user {printable(user)} has {self.user_connections[user]} open connection(s) "
                                   f"([limits] per_user_connections = {limit}); it would have gone to "
                                   f"{decision.candidates[0].name} ({decision.reason})")
        if decision.reason is Reason.NEW and decision.sticky_key is not None and self.new_users is not None:
            source = source_of(request.client_host)
            if not self.new_users.allows(source, now):
                decision = Decision(Reason.LIMITED, pool=decision.pool, route=decision.route,
                                    detail=f"{source} created more than {self.new_users.per_minute} new users "
                                           "in a minute ([limits] new_users_per_source)")
        return replace(decision, ambiguous=True) if ambiguous else decision

    def _decision(self, route: Route | None, request: RouteRequest, now: float, trace: Trace | None) -> Decision:
        if route is None:
            return Decision(Reason.DENIED, detail="no route matched")
        if route.deny:
            return Decision(Reason.DENIED, detail=f"{route.label} denies", route=route.label)
        if request.msts_target is not None:
            token = self._by_token(request.msts_target, now)
            if token is not None:
                return token
        assert route.pool is not None
        decision = self._in_pool(self.policy.pool(route.pool), request, now, trace)
        return replace(decision, route=route.label)

    def _route(self, request: RouteRequest, now: float, trace: Trace | None) -> tuple[Route | None, bool]:
        routes = self.policy.routes
        if not routes:
            return Route("default (no [[route]]: first pool)", pool=self.policy.pools[0].name), False
        users = self.candidate_users(request.user_key)
        given = MatchInput(users, parse_ip(request.client_host), now, request.collection,
                           request.listener, self.membership)
        route = first_match(routes, given, trace)
        ambiguous = len(users) > 1 and route is not None and self._ambiguous(routes, given, route)
        if ambiguous and trace is not None:
            trace.steps.append(("ambiguous", True, f"{len(users)} users share this truncated name; "
                                "the first matching route applies"))
        return route, ambiguous

    def candidate_users(self, key: str | None) -> tuple[str, ...]:
        """The users a cookie may stand for: itself, or for a truncated one, directory users."""
        if key is None:
            return ()
        n = self.policy.truncated_length
        if n and len(key) == n:
            # a cut login name stands for the directory users it may be the start of (the
            # name itself among them only if it is a user); unknown to the directory: as is
            return tuple(self.membership.users_with_prefix(key)) or (key,)
        return (key,)

    @staticmethod
    def _ambiguous(routes: tuple[Route, ...], given: MatchInput, chosen: Route) -> bool:
        for user in given.users:
            alone = first_match(routes, replace(given, users=(user,)))
            if alone is not None and alone.action != chosen.action:
                return True
        return False

    def _in_pool(self, pool: Pool, request: RouteRequest, now: float, trace: Trace | None) -> Decision:
        key = request.user_key
        if key is None:
            if self.policy.no_cookie is NoCookiePolicy.REJECT:
                return Decision(Reason.DENIED, detail="no cookie and no_cookie = reject")
            if self.policy.no_cookie is NoCookiePolicy.BALANCE:
                return self._balance(pool, None, Reason.NO_COOKIE, now)
            key = source_ip_key(request.client_host)
        entry = self.table.get(key, now)
        member = pool.member(entry.server) if entry is not None and entry.pool == pool.name else None
        sticky = entry if member is not None else None
        evidence = self._evidence(pool, request.user_key, now)
        if evidence is not None:
            if trace is not None:
                trace.steps.append(("sessions", bool(evidence.found), evidence.text()))
            by_sessions = self._by_sessions(pool, key, sticky, evidence, now, trace=trace)
            if by_sessions is not None:
                return by_sessions
        if sticky is not None and member is not None:
            decision = self._sticky(pool, member, sticky, now)
        else:  # no entry, or one for another pool: the user's groups changed, so the route decides
            decision = self._balance(pool, key, Reason.NEW, now)
        if evidence is not None and self.policy.session_rules[pool.name].trust is Trust.HINT:
            decision = replace(decision, detail=f"{decision.detail} [directory, as a hint: {evidence.text()}]")
        if evidence is not None and evidence.ambiguous:
            decision = replace(decision, name_ambiguous=True)
        return decision

    # -- the session directory (policy/host_sessions.py) -------------------------------------------

    def _evidence(self, pool: Pool, user: str | None, now: float) -> Evidence | None:
        rules = self.policy.session_rules.get(pool.name)
        if rules is None or self.host_sessions is None or user is None:
            return None  # no directory here, or no user name to look for (source-IP keys)
        n = self.policy.truncated_length
        return self.host_sessions.evidence((user,), self._names[pool.name], now,
                                      truncated=user if n and len(user) == n else None)

    def _by_sessions(self, pool: Pool, key: str, sticky: StickyEntry | None, evidence: Evidence,
                     now: float, *, trace: Trace | None = None) -> Decision | None:
        """The directory's decision where its evidence is enough (trust = "route"), else None."""
        if self.policy.session_rules[pool.name].trust is not Trust.ROUTE:
            return None
        down = frozenset(f.server for f in evidence.found if not self._serves(f.server))
        found, why = choose(evidence, sticky.server if sticky is not None else None, down)
        if found is not None:
            member = pool.member(found.server)
            assert member is not None  # evidence covers this pool's servers only
            gone, note = self._gone(found.server, now)
            if gone is not None and sticky is not None and sticky.server != found.server:
                return None  # a session on a host gone for good proves nothing: her entry, placed since, decides
            if gone is not None:
                return self._moved(pool, key, found.server, f"{why}, but {gone}", now)
            # her other sessions on serving hosts: where a failed connect falls through to
            others = tuple(m.server for f in evidence.found
                           if f.user == found.user and f.server != found.server and f.server not in down
                           and (m := pool.member(f.server)) is not None)
            return Decision(Reason.SESSION, key, pool.name, (member.server, *others), why + note)
        if sticky is None:
            return None
        held = self.entry_stands(pool, sticky, evidence, now)
        if held is not None:
            if trace is not None:
                grace = self._grace(pool)
                trace.steps.append(("entry stands", True, f"the entry for {sticky.server} stands: {held} (last used "
                                    f"{_ago(now - sticky.last_used)}, logon grace {grace:g}s)"))
            return None
        moved = self._balance(pool, key, Reason.NO_SESSION, now)
        detail = (f"no host of {pool.name} has a session for {printable(key)} ({len(evidence.fresh)} answered "
                  f"since it was last used, {_ago(now - sticky.last_used)}); the entry for {sticky.server} "
                  f"was history; {moved.detail}")
        return replace(moved, detail=detail, moved_from=sticky.server if moved.candidates else None)

    def entry_stands(self, pool: Pool, sticky: StickyEntry, evidence: Evidence, now: float) -> str | None:
        """Why the directory's evidence does not cover `sticky` (policy/host_sessions.py `history`), or
        None when the entry is history."""
        opened = max(sticky.active, self.user_connections[sticky.key])
        return history(evidence, sticky.last_used, opened, self._grace(pool), now)

    def _grace(self, pool: Pool) -> float:
        grace = self.policy.session_rules[pool.name].logon_grace_s
        if self.policy.shared_table:  # an open connection through another node shows as a recent last_used
            grace = max(grace, OPEN_ELSEWHERE_S)
        return grace

    def _serves(self, server: str) -> bool:
        cond = self.condition(server)
        return cond.up and cond.admin is not AdminState.MAINT

    def _gone(self, server: str, now: float) -> tuple[str | None, str]:
        """The failover rule, written once: why the users whose session is on `server` must leave
        it (maintenance, or down for failover_after), else None and, while it is down but held, a
        note saying so. A session on a host that was down that long proves nothing: the host may
        never come back with it."""
        cond = self.condition(server)
        if cond.admin is AdminState.MAINT:
            return f"{server} is in maintenance", ""
        if cond.up:
            return None, ""
        down_for = cond.down_for(now)
        if down_for >= self.policy.failover_after_s:
            return f"{server} down for {down_for:.0f}s", ""
        return None, f" (down for {down_for:.0f}s, held until failover_after)"

    def _moved(self, pool: Pool, key: str, server: str, why: str, now: float) -> Decision:
        moved = self._balance(pool, key, Reason.FAILOVER, now)
        return Decision(moved.reason, key, pool.name, moved.candidates, f"{why}; {moved.detail}", moved_from=server)

    def _sticky(self, pool: Pool, member: PoolMember, entry: StickyEntry, now: float) -> Decision:
        """A returning user: their session is on `member`, unless it is gone for good."""
        gone, note = self._gone(member.server.name, now)
        if gone is not None:
            return self._moved(pool, entry.key, entry.server, gone, now)
        detail = f"{printable(entry.key)} -> {member.server.name}{note}"
        return Decision(Reason.STICKY_HIT, entry.key, pool.name, (member.server,), detail)

    def _balance(self, pool: Pool, key: str | None, reason: Reason, now: float) -> Decision:
        refusing = self._refusing_new_logons(pool, now)
        usable = [m for m in pool.members if self._takes_new_users(m.server.name) and m.server.name not in refusing]
        load = self._load_function(pool, now)
        full = [m for m in usable
                if m.max_sessions is not None and m.weight > 0 and load(m.server.name) >= m.max_sessions]
        if full:  # at its cap a server takes no new user (its own users still reach it: not balanced)
            usable = [m for m in usable if m not in full]
        shares = self._shares(pool, now)
        ranking, turn = self._rankings[pool.name], self._turns[pool.name]
        ranked = ranking.rank([m for m in usable if not m.backup], load, turn, shares)
        spare = not ranked and any(m.backup for m in usable)
        if spare:  # hot spares: only while no other server of the pool can take new users
            ranked = ranking.rank([m for m in usable if m.backup], load, turn, shares)
        if not ranked and full:
            caps = ", ".join(f"{m.server.name} {load(m.server.name)}/{m.max_sessions}" for m in full)
            return Decision(Reason.FULL, key, pool.name,
                            detail=f"every server of pool {pool.name} that takes new users is at its max_sessions "
                                   f"({caps} {_LOAD_WORD[pool.balance]})")
        if not ranked:
            return Decision(Reason.NO_SERVER, key, pool.name, detail=f"no server of pool {pool.name} can take users")
        attempts = tuple(ranked[: self.policy.max_connect_attempts])
        notes = []
        if spare:
            why = ", ".join(f"{m.server.name} {self._unavailable(m, refusing, full, load)}"
                            for m in pool.members if not m.backup)
            notes.append(f"backup: no other server of pool {pool.name} takes new users: {why}")
        if shares:
            notes.append("slow start: " + ", ".join(f"{name} at {part:.0%} of its weight"
                                                    for name, part in shares.items()))
        note = "; ".join(notes)
        detail = f"{pool.balance} picked {attempts[0].name}" + (f" ({note})" if note else "")
        return Decision(reason, key, pool.name, attempts, detail, note=note)

    def on_backup(self, pool: Pool, now: float) -> bool:
        """True when a new user of `pool` would go to one of its backup servers now."""
        if not any(m.backup for m in pool.members):
            return False
        server = self._balance(pool, None, Reason.NEW, now).server
        member = pool.member(server.name) if server is not None else None
        return member is not None and member.backup

    def _unavailable(self, member: PoolMember, refusing: frozenset[str], full: list[PoolMember],
                     load: Callable[[str], int]) -> str:
        """Why a server takes no new user now, in a word or two (for a backup's explanation)."""
        name, cond = member.server.name, self.condition(member.server.name)
        if not cond.up:
            return "down"
        if cond.admin is not AdminState.READY:
            return str(cond.admin)
        if name in refusing:
            return "refuses new logons"
        if member in full:
            return f"full {load(name)}/{member.max_sessions}"
        return "weight 0"

    def _takes_new_users(self, server: str) -> bool:
        cond = self.condition(server)
        return cond.up and cond.admin is AdminState.READY

    def _refusing_new_logons(self, pool: Pool, now: float) -> frozenset[str]:
        """Hosts that say they refuse new logons (Windows "deny new connections"): as with drain."""
        if pool.name not in self.policy.session_rules or self.host_sessions is None:
            return frozenset()
        return self.host_sessions.split(self._names[pool.name], now).deny_new

    def _load_function(self, pool: Pool, now: float) -> Callable[[str], int]:
        if pool.balance is BalanceKind.LEASTSESSIONS:
            sessions, homed = self.host_sessions, self.table.homed
            if pool.name not in self.policy.session_rules or sessions is None:
                return homed
            # a host's real sessions where it answered recently, else the table's guess
            fresh = sessions.split(self._names[pool.name], now).fresh_set
            return lambda server: sessions.load(server) if server in fresh else homed(server)
        if self.external:
            return lambda server: self.connections[server] + self.external[server]
        return self.connections.__getitem__

    def _by_token(self, target: tuple[str, int], now: float) -> Decision | None:
        """A broker's routing token naming one of our servers: the session lives there.

        Not one of ours, or in maintenance: None, and ordinary routing applies. Down: held like
        a sticky user until failover_after, then ordinary routing.
        """
        for pool in self.policy.pools:
            for member in pool.members:
                if (member.server.host, member.server.port) != target:
                    continue
                if self._gone(member.server.name, now)[0] is not None:
                    return None
                return Decision(Reason.ROUTING_TOKEN, None, pool.name, (member.server,), "msts token")
        return None

    # -- applying ---------------------------------------------------------------------------

    def assign(self, decision: Decision, server: Server, now: float) -> Change:
        """Remember that the decision's user now lives on `server` (no-op if not remembered)."""
        if decision.sticky_key is None or decision.pool is None:
            return Change()
        if self.host_sessions is not None and decision.reason in _BALANCED:
            self.host_sessions.placed(server.name, decision.sticky_key, now)  # its load until it answers again
        current = self.table.get(decision.sticky_key, now)
        if current is not None and current.server == server.name and current.pool == decision.pool:
            return Change()
        return self.table.assign(decision.sticky_key, decision.pool, server.name, now)

    def unassign(self, decision: Decision, now: float) -> Change:
        """Every connect failed: undo what `assign` did for this decision (restore a moved user)."""
        key = decision.sticky_key
        if key is None or decision.pool is None or decision.reason not in _UNDONE:
            return Change()
        entry = self.table.get(key, now)
        if entry is None or entry.active > 0:
            return Change()
        if decision.moved_from is not None:
            return self.table.assign(key, decision.pool, decision.moved_from, now)
        self.table.delete(key)
        return Change(delete=(key,), prior=((key, entry.server),))

    def opened(self, server: Server) -> None:
        self.connections[server.name] += 1

    def closed(self, server: Server) -> None:
        self.connections[server.name] -= 1
        if self.connections[server.name] <= 0:
            del self.connections[server.name]

    def user_opened(self, user: str) -> None:
        """A connection of `user` opens or starts connecting ([limits] per_user_connections)."""
        self.user_connections[user] += 1

    def user_closed(self, user: str) -> None:
        self.user_connections[user] -= 1
        if self.user_connections[user] <= 0:
            del self.user_connections[user]


def counted_user(decision: Decision) -> str | None:
    """The user key a connection counts for in [limits] per_user_connections."""
    return limited_key(decision.sticky_key)


def limited_key(key: str | None) -> str | None:
    """A sticky key as [limits] per_user_connections counts it: a user's own key, not an address
    standing in for a user without a cookie (the per-source limits count those)."""
    return None if key is None or key.startswith(SOURCE_IP_PREFIX) else key


def _ago(seconds: float) -> str:
    return f"{max(0.0, seconds):.0f}s ago"


def _open_to_new(cond: ServerCondition) -> bool:
    return cond.up and cond.admin is AdminState.READY


def _weighted(policy: RoutingPolicy) -> set[str]:
    """Servers with a weight above 0 in at least one pool: they may take new users."""
    return {m.server.name for p in policy.pools for m in p.members if m.weight > 0}


