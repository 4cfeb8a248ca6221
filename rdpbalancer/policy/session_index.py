"""The session directory's index: every host's last list, by user key, and the placements whose
logon is pending. Pure: reports come in as values (policy/host_sessions.py), time as an argument. The
rules that read it (`history`, `choose`) are in policy/host_sessions.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rdpbalancer.policy.host_sessions import (
    DEFAULT_LOGON_GRACE_S,
    DEFAULT_STALE_AFTER_S,
    Evidence,
    Found,
    HostReport,
    HostSession,
)
from rdpbalancer.policy.identity import name_key, strip_domain_part

MAX_KNOWN_NAMES = 200_000  # user names the hosts have listed, remembered for comparability (LRU)


def bare(key: str) -> str:
    """A user key without its domain part (`corp\\alice`, `alice@corp` -> `alice`)."""
    return strip_domain_part(key)


def session_key(session: HostSession, *, strip_domain: bool) -> str | None:
    """A host's user as a sticky key: the same rules as the cookie (identity.py), so `CORP\\Alice`
    on a host and the cookie `alice` meet."""
    name = f"{session.domain}\\{session.user}" if session.domain else session.user
    return name_key(name, strip_domain=strip_domain)


@dataclass(frozen=True, slots=True)
class Split:
    fresh: tuple[str, ...]
    fresh_set: frozenset[str]
    stale: tuple[str, ...]
    deny_new: frozenset[str]
    answered: tuple[float, ...] = ()  # when each of `fresh` last answered


class SessionDirectory:
    """Every host's last report, indexed by user key. Updated by the sources, read by the router."""

    def __init__(self, *, strip_domain: bool = True) -> None:
        self.strip_domain = strip_domain
        self.reports: dict[str, HostReport] = {}
        self.stale_after: dict[str, float] = {}  # server -> how long its list is evidence (configured)
        self.logon_grace_s = DEFAULT_LOGON_GRACE_S  # the longest of the pools': how long a placement is pending
        self._users: dict[str, dict[str, HostSession]] = {}  # user key -> server -> session
        # without strip_domain: a bare name -> the keys with a domain listed for it (`alice` ->
        # {`corp\alice`}), so a cookie without a domain finds a session reported with one
        self._qualified: dict[str, set[str]] = {}
        # every name a host listed (and its bare form), least recently listed first: a name never
        # listed may be spelt otherwise by the hosts (a UPN prefix that is not the account name)
        self._known: dict[str, None] = {}
        self._keys: dict[str, frozenset[str]] = {}  # server -> the user keys of its sessions
        self._placed: dict[str, dict[str, float]] = {}  # server -> user key -> when placed there
        # user key -> servers placed on since their answer (a tuple: one server, most often, and
        # a set would cost 216 bytes for each user placed)
        self._placed_on: dict[str, tuple[str, ...]] = {}
        # servers -> (their split into fresh, stale and refusing new logons, valid until): a
        # connection reads it in O(1); any change of a report, or the first report to age, renews it
        self._splits: dict[tuple[str, ...], tuple[Split, float]] = {}
        # server -> lists received before this are no evidence (the host was down since: it may
        # have restarted without the sessions it listed)
        self._valid_from: dict[str, float] = {}

    # -- updates --------------------------------------------------------------------------------

    def update(self, report: HostReport) -> None:
        """A host answered: its list replaces what it said before."""
        old = self.reports.get(report.server)
        if old is not None and old.at is not None and report.at is not None and report.at < old.at:
            return  # an answer older than what we have (a slow query overtaken by a push)
        self._unindex(report.server)
        self.reports[report.server] = report
        self._index(report)
        placed = self._placed.get(report.server)
        if placed and report.at is not None:  # pending until listed, or the grace passed before this answer
            there = self._keys[report.server]
            kept = {u: t for u, t in placed.items()
                    if not self._listed(u, there) and (t >= report.at or report.at - t < self.logon_grace_s)}
            for user in placed.keys() - kept.keys():
                self._unplace(report.server, user)
            self._placed[report.server] = kept
        self._splits.clear()

    def _index(self, report: HostReport) -> None:
        keys = set()
        for session in report.sessions:
            key = session_key(session, strip_domain=self.strip_domain)
            if key is None:
                continue
            self._users.setdefault(key, {})[report.server] = session
            keys.add(key)
            name = bare(key)
            if name != key:
                self._qualified.setdefault(name, set()).add(key)
            for known in (key, name):
                self._known.pop(known, None)
                self._known[known] = None
        while len(self._known) > MAX_KNOWN_NAMES:
            del self._known[next(iter(self._known))]
        self._keys[report.server] = frozenset(keys)

    def _listed(self, user: str, there: frozenset[str]) -> bool:
        return user in there or any(key in there for key in self.keys_for(user)[0])

    def rekey(self, strip_domain: bool) -> None:
        """[identity] strip_domain changed (a reload): the hosts' lists are indexed by the new rule."""
        if strip_domain == self.strip_domain:
            return
        self.strip_domain = strip_domain
        self._users.clear()
        self._qualified.clear()
        self._known.clear()
        self._keys.clear()
        self._placed.clear()  # keyed by the old rule; sticky entries carry the placements' times
        self._placed_on.clear()
        for report in self.reports.values():
            self._index(report)
        self._splits.clear()

    def outdated(self, server: str, at: float) -> None:
        """`server` was down and is back: what it said before `at` is no evidence until it
        answers again (routing for it falls back to the sticky table meanwhile)."""
        self._valid_from[server] = at
        self._splits.clear()

    def failed(self, server: str, error: str, at: float) -> None:
        """A query failed: what the host said before stays, and ages."""
        old = self.reports.get(server, HostReport(server))
        self.reports[server] = HostReport(server, old.sessions, old.at, error, at, old.deny_new)
        self._splits.clear()

    def forget(self, server: str) -> None:
        """The server left the configuration."""
        self._valid_from.pop(server, None)
        self._unindex(server)
        self.reports.pop(server, None)
        self._keys.pop(server, None)
        for user in self._placed.pop(server, {}):
            self._unplace(server, user)
        self._splits.clear()

    def configure(self, stale_after: dict[str, float], logon_grace_s: float = DEFAULT_LOGON_GRACE_S) -> None:
        self.stale_after = stale_after
        self.logon_grace_s = logon_grace_s
        self._splits.clear()

    def placed(self, server: str, user: str, at: float) -> None:
        """A new user was placed on `server`: counted as its load until its next answer. A host that
        does not answer again does not make this grow: placements older than its `stale_after`
        are dropped (by then its list is no evidence, and its load is the table's guess)."""
        placed = self._placed.setdefault(server, {})
        placed.pop(user, None)  # re-inserted last: the dict stays in placement order
        placed[user] = at
        servers = self._placed_on.get(user, ())
        if server not in servers:
            self._placed_on[user] = (*servers, server)
        # past both, the placement proves nothing either way: the grace passed, or the host's
        # last answer (before it) is stale
        horizon = at - max(self.stale_after.get(server, DEFAULT_STALE_AFTER_S), self.logon_grace_s)
        while placed:
            oldest, when = next(iter(placed.items()))
            if when >= horizon:
                break
            del placed[oldest]
            self._unplace(server, oldest)

    def _unplace(self, server: str, user: str) -> None:
        servers = self._placed_on.get(user)
        if servers is not None and server in servers:
            rest = tuple(s for s in servers if s != server)
            if rest:
                self._placed_on[user] = rest
            else:
                del self._placed_on[user]

    def _unindex(self, server: str) -> None:
        old = self.reports.get(server)
        if old is None:
            return
        for session in old.sessions:
            key = session_key(session, strip_domain=self.strip_domain)
            hosts = self._users.get(key) if key is not None else None
            if key is None or hosts is None:
                continue
            hosts.pop(server, None)
            if not hosts:
                del self._users[key]
                qualified = self._qualified.get(bare(key))
                if qualified is not None:
                    qualified.discard(key)
                    if not qualified:
                        del self._qualified[bare(key)]

    # -- reading --------------------------------------------------------------------------------

    def fresh(self, server: str, now: float) -> bool:
        report = self.reports.get(server)
        stale_after = self.stale_after.get(server, DEFAULT_STALE_AFTER_S)
        return report is not None and report.at is not None and now - report.at <= stale_after

    def age(self, server: str, now: float) -> float | None:
        report = self.reports.get(server)
        return None if report is None or report.at is None else max(0.0, now - report.at)

    def sessions_of(self, user: str) -> Mapping[str, HostSession]:
        return self._users.get(user, {})

    def keys_for(self, user: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The directory keys a cookie's user key stands for, and the ambiguous ones. With
        strip_domain (the default) both sides are bare names: the key itself. Without it, a
        cookie without a domain (`alice`) also stands for the one user with a domain listed for
        that name (`corp\\alice`), and several (`corp\\alice`, `lab\\alice`) are ambiguous;
        a cookie with a domain also stands for the bare name a host lists without one (xrdp)."""
        if self.strip_domain:
            return (user,), ()
        name = bare(user)
        if name != user:
            return ((user, name) if name in self._users else (user,)), ()
        qualified = self._qualified.get(user)
        if not qualified:
            return (user,), ()
        if len(qualified) > 1:
            return (user,), tuple(sorted(qualified))
        return (user, next(iter(qualified))), ()

    def known(self, user: str) -> bool:
        """A host listed this name (or, for a name with a domain, its bare form) since we started."""
        return user in self._known or (not self.strip_domain and bare(user) in self._known)

    def users_with_prefix(self, prefix: str) -> list[str]:
        return sorted(u for u in self._users if u.startswith(prefix))

    def load(self, server: str) -> int:
        """Real sessions, plus the users placed there since its last answer who are not in it yet."""
        report = self.reports.get(server)
        listed = len(report.sessions) if report is not None else 0
        placed = self._placed.get(server)
        if not placed:
            return listed
        there = self._keys.get(server, frozenset())
        return listed + sum(1 for user in placed if user not in there)

    def split(self, servers: tuple[str, ...], now: float) -> Split:
        """`servers` split by what their lists are worth now (cached until one of them changes or ages)."""
        cached = self._splits.get(servers)
        if cached is not None and now < cached[1]:
            return cached[0]
        fresh, stale, deny, until = [], [], set(), float("inf")
        answered: list[float] = []
        for server in servers:
            report = self.reports.get(server)
            if report is None or report.at is None:
                stale.append(server)
                continue
            ages_at = report.at + self.stale_after.get(server, DEFAULT_STALE_AFTER_S)
            if now > ages_at or report.at < self._valid_from.get(server, report.at):
                stale.append(server)
                continue
            fresh.append(server)
            answered.append(report.at)
            until = min(until, ages_at)
            if report.deny_new:
                deny.add(server)
        split = Split(tuple(fresh), frozenset(fresh), tuple(stale), frozenset(deny), tuple(answered))
        self._splits[servers] = (split, until)
        return split

    def duplicates(self) -> dict[str, tuple[str, ...]]:
        """Users with sessions on more than one host: user key -> servers."""
        return {u: tuple(sorted(hosts)) for u, hosts in self._users.items() if len(hosts) > 1}

    # -- the evidence for one decision -----------------------------------------------------------------

    def evidence(self, users: Iterable[str], servers: tuple[str, ...], now: float,
                 *, truncated: str | None = None) -> Evidence:
        """The sessions of `users` on the fresh ones of `servers`. With `truncated` (a cut cookie),
        the users are those of the directory whose name starts with it."""
        split = self.split(servers, now)
        fresh = split.fresh_set
        given = list(users)
        wanted = self.users_with_prefix(truncated) if truncated is not None else given
        found: tuple[Found, ...] = ()
        pending: tuple[str, ...] = ()
        ambiguous: tuple[str, ...] = ()
        for user in wanted:
            keys, unsure = ((user,), ()) if self.strip_domain or truncated is not None else self.keys_for(user)
            ambiguous += unsure
            for key in keys:
                hosts = self._users.get(key)
                if hosts:
                    found += tuple(Found(server, key, session) for server, session in sorted(hosts.items())
                                   if server in fresh)
            placed = self._placed_on.get(user)
            if placed:
                pending += tuple(s for s in split.fresh if s in placed)
        known = bool(wanted) if truncated is not None else all(self.known(user) for user in given)
        return Evidence(split.fresh, split.stale, found, tuple(wanted) if truncated is not None else (), pending,
                        split.answered, known, ambiguous)
