"""The session directory: which sessions really exist on each host, and the routing rules that
follow from it. Pure: the hosts' answers come in as `HostReport` values (relay-independent
sources in rdpbalancer/hosts/ produce them), time comes in as an argument. This module holds
the values and the rules; the index of every host's list is policy/session_index.py.

The sticky table is a guess about where a user's session is; a host's own list is the fact.
The rules, each with a reason and its evidence (`explain` shows them):

- **session**: a user with a live session (active or disconnected) on a host of their pool is
  sent there, whatever the table says; the table is corrected by the assignment.
- **no-session**: no host of the pool has a session for the user, and the evidence covers her
  sticky entry (`history`): every host of the pool answered within `stale_after` and after the
  entry was last used, that was longer ago than the logon grace, the user has no open or opening
  connection, and the hosts name users the way the cookie does. Then the entry is only history
  and the user is balanced as new. Anything short of that keeps the entry: a logon takes seconds
  to show in a host's list, and a missing session on weak evidence must never send a user away
  from the one she is logging on to.
- **duplicates**: a user with sessions on several hosts goes to one on a host that serves (up,
  not in maintenance) if there is one: the one the table names if it is among them, else a
  disconnected session (it waits for this user), else the newest logon. A session on a host that
  is down is no reason to refuse her or to hold her while another of her sessions is reachable.
  The duplicates are listed for the admins (API, dashboard, metric).
- **truncated names**: a cut cookie stands for the users whose name starts with it; if exactly
  one of them has a session in the pool, that one it is.
- **host drain**: a host that refuses new logons (where its source can tell) takes no new users.
- **down hosts**: a session on a host that is down is held like a sticky entry until
  `failover_after`, then it proves nothing (the host may never come back with it) and the user
  is placed elsewhere. A host in maintenance is left at once, as with the table.
- Data older than `stale_after` is no evidence at all: routing for that host falls back to the
  sticky table, as without a directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SessionState(StrEnum):
    ACTIVE = "active"
    DISCONNECTED = "disconnected"


class Trust(StrEnum):
    ROUTE = "route"  # the directory's evidence routes
    HINT = "hint"  # shown in explain and the API; routing as without it


@dataclass(frozen=True, slots=True)
class HostSession:
    """One session as its host reports it. Times are wall-clock seconds, None where unknown."""

    user: str
    domain: str = ""
    state: SessionState = SessionState.ACTIVE
    id: str = ""
    logon: float | None = None
    disconnected: float | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class HostReport:
    """What one host said last. `at`: when it answered (None: never); `error`: why the last query
    failed (None when the last one worked); `deny_new`: the host refuses new logons."""

    server: str
    sessions: tuple[HostSession, ...] = ()
    at: float | None = None
    error: str | None = None
    error_at: float | None = None
    deny_new: bool = False


DEFAULT_STALE_AFTER_S = 60.0
# A Windows logon under load (NLA, profile load, group policy) takes up to a minute or two before
# the host lists the user; until then her missing session proves nothing. Twice the worst we
# expect: the cost of a longer grace is a user who logged off recently going back to her host.
DEFAULT_LOGON_GRACE_S = 120.0
# A connection open through another node sharing the table: its entry's last_used is refreshed at
# least every 30 s (the sweep) and reaches us within the lazy flush (2 s) and a heartbeat (1 s).
OPEN_ELSEWHERE_S = 40.0


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The directory's settings for one pool (compiled from [sessions] and its override)."""

    trust: Trust = Trust.ROUTE
    logon_grace_s: float = DEFAULT_LOGON_GRACE_S  # a placement proves nothing missing before this


@dataclass(frozen=True, slots=True)
class Found:
    server: str
    user: str  # the directory's user key (for a truncated cookie: the full name)
    session: HostSession


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the directory knows about one user in one pool, now."""

    fresh: tuple[str, ...] = ()  # pool servers whose data is recent
    stale: tuple[str, ...] = ()  # pool servers without recent data (never answered, failing, old)
    found: tuple[Found, ...] = ()  # the user's sessions on fresh servers of the pool
    candidates: tuple[str, ...] = ()  # a truncated cookie: the directory users it may stand for
    pending: tuple[str, ...] = ()  # servers where the user's logon is pending (placed, not listed yet)
    answered: tuple[float, ...] = ()  # when each of `fresh` last answered (process clock)
    known_name: bool = True  # a host listed this name once: its absence can be compared
    ambiguous: tuple[str, ...] = ()  # users with a domain the cookie without one may stand for

    def text(self) -> str:
        if self.found:
            where = ", ".join(f"{f.server} ({f.session.state}, id {f.session.id or '?'})" for f in self.found)
            return f"sessions on {where}"
        known = f"no session; {len(self.fresh)} host(s) answered"
        if self.stale:
            known += f", {len(self.stale)} without recent data: {', '.join(self.stale)}"
        if self.pending:
            known += f"; logon pending on {', '.join(self.pending)} (placed, not listed yet)"
        if self.ambiguous:
            known += f"; the name may be any of {', '.join(self.ambiguous)}"
        elif not self.known_name:
            known += "; no host listed this name since the balancer started"
        return known


def history(evidence: Evidence, placed_at: float, open_connections: int, grace_s: float, now: float) -> str | None:
    """None when the evidence covers a sticky entry last used at `placed_at`: no host of the pool
    has a session for the user, and each one had the time to show it. Else why the entry stands.

    The rule, in the order it is checked: every host of the pool answered within `stale_after`;
    the names compare (a host listed this user name once, and a cookie without a domain stands for
    one user with a domain at most); the user has no open or opening connection; the entry was
    last used (placed, connected to, left) longer ago than the logon grace; and every host
    answered after that."""
    if not evidence.fresh or evidence.stale:
        return f"{', '.join(evidence.stale) or 'no host'} without recent data"
    if evidence.ambiguous:
        return f"the name may stand for {', '.join(evidence.ambiguous)}"
    if not evidence.known_name:
        return "no host listed this name since the balancer started (names may not compare)"
    if open_connections > 0:
        return f"{open_connections} open or opening connection(s)"
    if evidence.pending:
        return f"logon pending on {', '.join(evidence.pending)}"
    since = now - placed_at
    if since < grace_s:
        return f"last used {max(0.0, since):.0f}s ago, within the logon grace ({grace_s:g}s)"
    late = [server for server, at in zip(evidence.fresh, evidence.answered, strict=True) if at <= placed_at]
    if late:
        return f"{', '.join(late)} did not answer since the entry was last used"
    return None


def choose(evidence: Evidence, sticky_server: str | None,
           down: frozenset[str] = frozenset()) -> tuple[Found | None, str]:
    """Where a user with sessions goes, and why; None when the evidence names no one host (no
    session, or a truncated cookie shared by several users with sessions). `down`: the servers
    that do not serve now (down or in maintenance); with duplicates, the others go first."""
    found = evidence.found
    if not found:
        return None, ""
    users = {f.user for f in found}
    if len(users) > 1:
        return None, f"{len(users)} users with sessions share this truncated name: {', '.join(sorted(users))}"
    if len(found) == 1:
        return found[0], f"session {found[0].session.id or '?'} ({found[0].session.state}) on {found[0].server}"
    servers = ", ".join(f.server for f in found)
    serving = [f for f in found if f.server not in down]
    if serving and len(serving) < len(found):
        servers += f" ({', '.join(f.server for f in found if f.server in down)} not serving)"
    among = serving or list(found)
    for f in among:
        if f.server == sticky_server:
            return f, f"duplicate sessions on {servers}; the sticky entry's {f.server}"
    disconnected = [f for f in among if f.session.state is SessionState.DISCONNECTED]
    pick = max(disconnected or among, key=lambda f: f.session.logon or 0.0)
    why = "the disconnected one" if disconnected else "the newest logon"
    return pick, f"duplicate sessions on {servers}; {why}, on {pick.server}"
