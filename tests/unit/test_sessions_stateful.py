"""A stateful property test of the session directory and the router against a model farm.

The model: three hosts whose lists lag logons by a random delay (up to MAX_LAG_S, within the
logon grace), users who connect, hang up, retry, reconnect and log off, hosts that push when they
like, go down and come back (rebooted, without their sessions, once down past failover_after),
handoffs to a new process (the table loaded from the store, the hosts' lists and the open
connections handed over, nothing else), reloads that change the grace, and steps of the wall
clock (the router reads the process clock, rdpbalancer/clock.py).

The promise checked at every connection: the router never sends a user away from the host where
she has a session or a logon under way, unless that host is down past failover_after. And a
user never has sessions on two hosts unless such a failover made the second one.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rdpbalancer.clock import ProcessClock
from rdpbalancer.policy.engine import Router, RoutingPolicy
from rdpbalancer.policy.host_sessions import HostReport, HostSession, SessionRules, SessionState, Trust
from rdpbalancer.policy.model import BalanceKind, Decision, Pool, PoolMember, RouteRequest, Server
from rdpbalancer.policy.session_index import SessionDirectory
from rdpbalancer.policy.sticky import StickyEntry, StickyTable

SERVERS = tuple(Server(f"TS0{i}", "127.0.0.1", 3390 + i) for i in (1, 2, 3))
NAMES = tuple(s.name for s in SERVERS)
USERS = ("alice", "bob", "carol")
MAX_LAG_S = 20.0  # a logon shows in its host's list at most this long after the connection
GRACES = (30.0, 60.0, 120.0)  # every one longer than the longest lag: the admin's promise
FAILOVER_AFTER_S = 60.0
STALE_AFTER_S = 60.0


@dataclass
class Logon:
    server: str
    shows_at: float  # model time when the host lists it


class Farm(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wall, self.mono = 1_000_000.0, 50.0
        self.clock = ProcessClock(lambda: self.wall, lambda: self.mono)
        self.grace = GRACES[0]
        self.sessions: dict[str, dict[str, SessionState]] = {n: {} for n in NAMES}  # what each host really has
        self.logons: dict[str, Logon] = {}  # user -> a logon under way
        self.open: dict[str, list[Decision]] = {u: [] for u in USERS}  # user -> her open connections
        self.down_since: dict[str, float] = {}
        self.router = self._router(StickyTable(ttl_s=8 * 3600.0, max_entries=100), SessionDirectory())
        self.failovers: set[str] = set()  # users a failover legitimately gave a second home

    def _policy(self) -> RoutingPolicy:
        pool = Pool("farm", BalanceKind.LEASTCONN, tuple(PoolMember(s, 1) for s in SERVERS))
        return RoutingPolicy((pool,), failover_after_s=FAILOVER_AFTER_S,
                             session_rules={"farm": SessionRules(Trust.ROUTE, self.grace)})

    def _router(self, table: StickyTable, directory: SessionDirectory) -> Router:
        router = Router(self._policy(), table)
        directory.configure(dict.fromkeys(NAMES, STALE_AFTER_S), self.grace)
        router.host_sessions = directory
        return router

    @property
    def now(self) -> float:
        return self.clock.now()

    # -- the hosts -------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Logons whose time came show in their host's list (as disconnected if the client left)."""
        for user, logon in list(self.logons.items()):
            if self.now >= logon.shows_at:
                state = SessionState.ACTIVE if self.open[user] else SessionState.DISCONNECTED
                self.sessions[logon.server][user] = state
                del self.logons[user]

    def homes(self, user: str) -> set[str]:
        homes = {n for n in NAMES if user in self.sessions[n]}
        if user in self.logons:
            homes.add(self.logons[user].server)
        return homes

    @rule(dt=st.floats(min_value=0.0, max_value=40.0))
    def time_passes(self, dt: float) -> None:
        self.wall += dt
        self.mono += dt
        self._settle()

    @rule(step=st.sampled_from((-3600.0, -600.0, 600.0, 3600.0)))
    def the_wall_clock_steps(self, step: float) -> None:
        self.wall += step

    @rule(server=st.sampled_from(NAMES))
    def a_host_pushes(self, server: str) -> None:
        if server in self.down_since:
            return
        self._settle()
        listed = tuple(HostSession(u, domain="CORP", state=s) for u, s in sorted(self.sessions[server].items()))
        assert self.router.host_sessions is not None
        self.router.host_sessions.update(HostReport(server, listed, at=self.now))

    @rule(dt=st.floats(min_value=0.0, max_value=200.0))
    def every_host_pushes_after(self, dt: float) -> None:
        """Hosts push on a timer: the common case, and the one that makes no-session decisions."""
        self.time_passes(dt)
        for server in NAMES:
            self.a_host_pushes(server)

    @rule(server=st.sampled_from(NAMES))
    def a_host_goes_down(self, server: str) -> None:
        if server not in self.down_since:
            self.down_since[server] = self.now
            self.router.set_health(server, False, self.now)

    @rule(server=st.sampled_from(NAMES))
    def a_host_comes_back(self, server: str) -> None:
        since = self.down_since.pop(server, None)
        if since is None:
            return
        if self.now - since >= FAILOVER_AFTER_S:  # rebooted: its sessions are gone
            self.sessions[server].clear()
            for user in [u for u, lo in self.logons.items() if lo.server == server]:
                del self.logons[user]
        self.router.set_health(server, True, self.now)

    # -- the users -------------------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS), lag=st.floats(min_value=0.5, max_value=MAX_LAG_S))
    def a_user_connects(self, user: str, lag: float) -> None:
        self._settle()
        homes = self.homes(user)
        decision = self.router.decide(RouteRequest("10.0.0.1", user), self.now)
        server = decision.server
        usable = {h for h in homes if h not in self.down_since or self.now - self.down_since[h] < FAILOVER_AFTER_S}
        if usable:
            assert server is not None and server.name in usable, (user, homes, decision)
        if server is None:  # every host down: refused
            return
        elif homes:
            self.failovers.add(user)  # her host is down past failover_after: moving her is the policy
        if server.name in self.down_since:  # held for a host that is down: the connect fails
            self.router.unassign(decision, self.now)
            return
        self.router.assign(decision, server, self.now)
        self.router.opened(server)
        self.router.user_opened(user)
        self.router.table.session_opened(user, self.now)
        self.open[user].append(decision)
        if user in self.sessions[server.name]:
            self.sessions[server.name][user] = SessionState.ACTIVE  # reattached
        elif user not in self.logons or self.logons[user].server != server.name:
            self.logons[user] = Logon(server.name, self.now + lag)

    @precondition(lambda self: any(self.open.values()))
    @rule(data=st.data())
    def a_client_hangs_up(self, data: st.DataObject) -> None:
        self._hang_up(data.draw(st.sampled_from([u for u in USERS if self.open[u]])))

    def _hang_up(self, user: str) -> None:
        decision = self.open[user].pop(0)
        assert decision.server is not None
        self.router.closed(decision.server)
        self.router.user_closed(user)
        self.router.table.session_closed(user, self.now)
        if not self.open[user]:
            for server in NAMES:
                if user in self.sessions[server]:
                    self.sessions[server][user] = SessionState.DISCONNECTED

    @rule(user=st.sampled_from(USERS))
    def a_user_logs_off(self, user: str) -> None:
        self._settle()
        if user in self.logons:
            return  # her logon is not done yet
        while self.open[user]:
            self._hang_up(user)  # logging off ends her connections
        for server in NAMES:
            self.sessions[server].pop(user, None)

    @rule(user=st.sampled_from(USERS), away=st.floats(min_value=0.0, max_value=300.0))
    def a_user_logs_off_and_comes_back(self, user: str, away: float) -> None:
        """A working day's common story, in one step: the moment no-session decisions are made."""
        self.a_user_connects(user, 1.0)
        self.time_passes(MAX_LAG_S)
        self.a_user_logs_off(user)
        self.every_host_pushes_after(away)
        self.a_user_connects(user, 1.0)

    # -- the balancer ----------------------------------------------------------------------------

    @rule()
    def a_handoff(self) -> None:
        """A new process: the table from the store, the hosts' lists and the open connections
        handed over, the conditions too; no placement, no name seen before."""
        old = self.router
        entries = [StickyEntry(e.key, e.pool, e.server, e.created, e.last_used) for e in old.table]
        table = StickyTable(ttl_s=old.table.ttl_s, max_entries=old.table.max_entries)
        table.load(entries, self.now)
        directory = SessionDirectory()
        assert old.host_sessions is not None
        for report in old.host_sessions.reports.values():
            directory.update(report)
        router = self._router(table, directory)
        router.conditions = dict(old.conditions)
        router.connections = old.connections.copy()
        for user, decisions in self.open.items():
            for _ in decisions:
                router.user_opened(user)
                table.session_opened(user, self.now)
        self.router = router

    @rule(grace=st.sampled_from(GRACES))
    def a_reload(self, grace: float) -> None:
        self.grace = grace
        self.router.swap_policy(self._policy(), self.now)
        assert self.router.host_sessions is not None
        self.router.host_sessions.configure(dict.fromkeys(NAMES, STALE_AFTER_S), grace)

    @invariant()
    def one_session_per_user_unless_a_failover_made_two(self) -> None:
        for user in USERS:
            if user not in self.failovers:
                assert len(self.homes(user)) <= 1, (user, self.sessions, self.logons)


TestFarm = Farm.TestCase
TestFarm.settings = settings(max_examples=300, stateful_step_count=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
