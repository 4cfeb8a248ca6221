"""`rdpbalancer explain`: where would this user go, and why? The live router, run offline.

It reads the configuration, the sticky table (read-only) and the group membership (the disk
cache, then one directory fetch), and runs the same `Router.decide` the relay runs, with a
trace of every route. Health is not known offline: every server counts as up, unless
`--down` names it; a running balancer's view is `rdpbalancer ctl explain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rdpbalancer import clock
from rdpbalancer.config.compile import compile_config
from rdpbalancer.config.schema import Config
from rdpbalancer.directory.build import build_directory
from rdpbalancer.directory.model import GroupSnapshot
from rdpbalancer.netaddr import format_addr
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.identity import printable, source_ip_key, user_key
from rdpbalancer.policy.model import Decision, RouteRequest
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.proto.tokens import msts_target, tsv_collection
from rdpbalancer.store.sqlite import SqliteStickyStore


@dataclass(frozen=True, slots=True)
class Question:
    user: str | None
    source: str = "0.0.0.0"
    at: float | None = None  # wall clock; None = now
    token: str | None = None  # "msts=..." / "Cookie: msts=..." / "tsv://..."
    listener: str | None = None
    down: tuple[str, ...] = ()


async def explain(config: Config, q: Question) -> str:
    snapshot = compile_config(config)
    now = q.at if q.at is not None else clock.now()
    table = StickyTable(ttl_s=config.sticky.ttl, max_entries=config.sticky.max_entries)
    table.load(SqliteStickyStore(config.sticky.path).read_only(), now)
    router = Router(snapshot.policy, table)
    for server, state in snapshot.admin_states.items():
        router.set_admin_state(server, state, now)
    for server in q.down:
        router.set_health(server, False, 0.0)
    groups = await _membership(config, router)
    request = _request(config, q)
    trace = Trace()
    decision = router.preview(request, now, trace)
    return _report(q, Outcome(request, now, groups, trace, decision), router)


@dataclass(frozen=True, slots=True)
class Outcome:
    request: RouteRequest
    now: float
    groups: GroupSnapshot | None
    trace: Trace
    decision: Decision


async def _membership(config: Config, router: Router) -> GroupSnapshot | None:
    if not config.groups:
        return None
    directory = build_directory(config, lambda s: setattr(router, "membership", s))
    await directory.start()
    await directory.stop()
    return directory.snapshot


def _request(config: Config, q: Question) -> RouteRequest:
    listener = q.listener or str(config.balancer.listen[0])
    return route_request(q.user, q.source, q.token, listener, strip_domain=config.identity.strip_domain)


def route_request(user: str | None, source: str, token_text: str | None, listener: str, *,
                  strip_domain: bool) -> RouteRequest:
    """The request a client would make: the user as a cookie would give it, a broker token as
    typed (`msts=...`, `Cookie: msts=...` or `tsv://...`). One rule for `explain` offline and live."""
    key = user_key(user.encode(), strip_domain=strip_domain) if user else None
    token = token_text.encode() if token_text else None
    if token is not None and token.startswith(b"msts="):
        token = b"Cookie: " + token
    return RouteRequest(source, key, msts_target(token), tsv_collection(token), listener)


def _report(q: Question, out: Outcome, router: Router) -> str:
    request, now, groups, trace, decision = out.request, out.now, out.groups, out.trace, out.decision
    when = datetime.fromtimestamp(now).astimezone()
    key = request.user_key
    lines = [f"user: {q.user!r} -> key {printable(key) if key else '- (no cookie)'}",
             f"source: {request.client_host}   listener: {request.listener}   at: {when:%Y-%m-%d %H:%M %Z (%a)}"]
    if request.msts_target or request.collection:
        target = format_addr(*request.msts_target) if request.msts_target else "-"
        lines.append(f"token: msts target {target}, collection {request.collection or '-'}")
    candidates = router.candidate_users(key)
    if len(candidates) > 1 or (key and candidates and candidates[0] != key):
        lines.append(f"truncated name: stands for {', '.join(candidates)}")
    if groups is not None:
        mine = sorted({g for user in candidates for g in groups.groups_of(user)})
        lines.append(f"groups: {', '.join(mine) or '(none)'}   [directory: {groups.source}, "
                     f"data from {datetime.fromtimestamp(groups.fetched_at).astimezone():%Y-%m-%d %H:%M}]")
    lines.append("routes:")
    width = max((len(label) for label, _, _ in trace.steps), default=0)
    lines += [f"  {label:<{width}}  {'MATCH' if ok else 'no   '}  {why}" for label, ok, why in trace.steps]
    if not trace.steps:
        lines.append("  (no [[route]]: the first pool serves everyone)")
    lines.append(f"decision: {decision.reason}   pool: {decision.pool or '-'}   {decision.detail}")
    if decision.candidates:
        lines.append(f"server: {decision.candidates[0].name} ({decision.candidates[0].address}); "
                     f"would try in order: {', '.join(s.name for s in decision.candidates)}")
    entry = router.table.get(key or source_ip_key(request.client_host), now)
    if entry is not None:
        lines.append(f"sticky: {printable(entry.key)} -> {entry.server} (pool {entry.pool}, last used "
                     f"{datetime.fromtimestamp(entry.last_used).astimezone():%Y-%m-%d %H:%M})")
    lines.append("health: not checked offline (all servers count as up; --down NAME to simulate)")
    return "\n".join(lines)
