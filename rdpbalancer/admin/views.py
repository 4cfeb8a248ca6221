"""Read models of the admin API: plain dicts built from the running balancer's state.

Kept apart from the HTTP handlers so the dashboard, `ctl` and tests all see one shape.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rdpbalancer.health.state import Transition
from rdpbalancer.policy.identity import printable
from rdpbalancer.policy.model import RouteRequest
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.sticky import StickyEntry
from rdpbalancer.ports import ReadModel
from rdpbalancer.relay.context import SessionView


def health(view: ReadModel) -> tuple[dict[str, Any], bool]:
    """`/healthz`: the verdict (serving: listeners and a server up) and what degrades it."""
    listening = bool(view.addresses)
    up = [s["name"] for s in servers(view) if s["health"] != "down" and s["admin_state"] != "maint"]
    store = view.store_health()
    store_ok = store.unsaved == 0
    healthy = listening and bool(up)
    body: dict[str, Any] = {"listeners": listening, "servers_up": len(up)}
    if store.shared:
        store_ok = store_ok and store.available is not False
        body["shared_store_up"] = store.available is not False  # Redis away: degraded, still serving
    body["sticky_store_ok"] = store_ok
    hosts = view.host_sessions().hosts
    if hosts:  # a stale list degrades nothing (routing falls back to the table): shown, not failed
        stale = sorted(h.source.server for h in hosts if not h.fresh)
        body["session_sources"] = {"fresh": len(hosts) - len(stale), "stale": stale}
    body["status"] = "ok" if healthy and store_ok else "degraded" if healthy else "down"
    if not store_ok:  # what keepalived's log and an operator's curl should show at once
        body["sticky_store_error"] = store.last_error
    return body, healthy


def explain(view: ReadModel, request: RouteRequest) -> dict[str, Any]:
    """Where `request` would go now, with every step (a preview: nothing changes)."""
    trace = Trace()
    preview = view.preview(request, trace)
    decision = preview.decision
    return {
        "user": request.user_key, "candidates": list(preview.candidates), "groups": sorted(preview.groups),
        "steps": [{"route": label, "matched": ok, "why": why} for label, ok, why in trace.steps],
        "decision": {"reason": str(decision.reason), "pool": decision.pool, "detail": decision.detail,
                     "servers": [s.name for s in decision.candidates], "moved_from": decision.moved_from},
    }


def servers(view: ReadModel) -> list[dict[str, Any]]:
    routing = view.routing()
    policy, now, overrides = routing.policy, routing.at, view.admin_overrides  # with run-time weight overrides
    live = Counter(s.server.name for s in view.sessions.values() if s.server is not None and s.relaying)
    out = []
    for name, server in policy.servers().items():
        state = routing.servers[name]
        check, cond, ramp = state.check, state.condition, state.ramp
        part = ramp[0] if ramp is not None else 1.0
        out.append({
            "name": name,
            "address": server.address,
            "pools": [{"pool": p.name, "weight": m.weight, "effective_weight": round(m.weight * part, 2),
                       "max_sessions": m.max_sessions, "backup": m.backup}
                      for p in policy.pools for m in p.members if m.server.name == name],
            # slow start: the window, and while it ramps, the share of its weight and the time left
            "slowstart": {"window_s": policy.slowstart[name],
                          "share": round(ramp[0], 3) if ramp is not None else None,
                          "left_s": round(ramp[1], 1) if ramp is not None else None}
            if name in policy.slowstart else None,
            "admin_state": str(cond.admin),
            "admin_state_config": str(view.snapshot.admin_states.get(name, "ready")),
            "transparent": name in view.snapshot.relay.transparent,  # it sees clients' addresses
            "admin_state_override": str(overrides[name]) if name in overrides else None,
            "health": str(check.state) if check else "unknown",
            "health_since": check.since if check and check.since else None,
            "check": check.kind if check else None,
            "last_check": check.last_check if check else None,
            "last_check_ok": (check.last_error is None or check.failures == 0) if check else None,
            "last_error": check.last_error if check else None,
            "last_latency_ms": round(check.last_latency_s * 1000, 2)
            if check and check.last_latency_s is not None else None,
            "active_sessions": live[name],
            "connections": state.connections,
            "homed_users": state.homed_users,
            "down_for_s": round(cond.down_for(now), 1) if not cond.up else None,
        })
    return out


def session(s: SessionView) -> dict[str, Any]:
    return {
        "id": s.id,
        "state": s.state.value,
        "user": s.user,
        "client": f"{s.client_addr[0]}:{s.client_addr[1]}",
        "listener": s.listener,
        "pool": s.decision.pool if s.decision else None,
        "server": s.server.name if s.server else None,
        "reason": str(s.decision.reason) if s.decision else None,
        "started": s.started_wall,
        "bytes_up": s.bytes_up,
        "bytes_down": s.bytes_down,
        "worker": s.worker,
    }


def entry(e: StickyEntry) -> dict[str, Any]:
    return {"user": e.key, "pool": e.pool, "server": e.server, "created": e.created,
            "last_used": e.last_used, "active_sessions": e.active}


def routes(view: ReadModel) -> list[dict[str, Any]]:
    out = []
    for r in view.snapshot.policy.routes:
        out.append({
            "label": r.label, "pool": r.pool, "deny": r.deny,
            "users": sorted(r.users) if r.users is not None else None,
            "groups": list(r.groups) if r.groups is not None else None,
            "sources": [str(n) for n in r.sources] if r.sources is not None else None,
            "time": r.time.describe() if r.time is not None else None,
            "collection": r.collection, "listener": r.listener,
        })
    return out


def groups(view: ReadModel) -> dict[str, Any]:
    status = view.directory_status()
    return {
        "groups": {name: {"size": status.group_sizes.get(name, 0),
                          "source": "ldap" if g.ldap else "file" if g.file else "static",
                          "error": status.file_errors.get(name)}
                   for name, g in view.snapshot.config.groups.items()},
        "directory": {
            "source": status.source, "age_s": status.age_s, "last_success": status.last_success,
            "last_attempt": status.last_attempt, "last_error": status.last_error,
        },
    }


def config_status(view: ReadModel) -> dict[str, Any]:
    st = view.config_status
    return {"file": st.path, "loaded_at": st.loaded_at, "last_reload_at": st.last_reload_at,
            "last_reload_error": st.last_reload_error, "reloads_ok": st.reloads_ok,
            "reloads_failed": st.reloads_failed,
            "listen": [f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in view.addresses],
            "ha": ha_state(view)}


def ha_state(view: ReadModel) -> dict[str, Any] | None:
    """The node's place in a keepalived pair (None: no [admin] ha_state_file)."""
    ha = view.ha_state()
    if ha is None:
        return None
    return {"state": ha.state, "role": ha.role, "since": ha.since, "error": ha.error}


def transition(t: Transition) -> dict[str, Any]:
    return {"server": t.server, "old": str(t.old), "new": str(t.new), "at": t.at, "reason": t.reason,
            "last_error": t.last_error}


def user_text(key: str | None) -> str:
    return printable(key) if key is not None else "-"


def hosts(view: ReadModel) -> dict[str, Any]:
    """Every server with a session source: what it said, how old that is, and its health."""
    directory = view.host_sessions()
    out = []
    for host in directory.hosts:
        report, source = host.report, host.source
        sessions = report.sessions if report is not None else ()
        out.append({
            "server": source.server,
            "source": source.kind,
            "sessions": len(sessions),
            "active": sum(1 for s in sessions if s.state == "active"),
            "disconnected": sum(1 for s in sessions if s.state == "disconnected"),
            "answered_at": report.at if report is not None else None,
            "age_s": round(host.age_s, 1) if host.age_s is not None else None,
            "fresh": host.fresh,
            "stale_after_s": source.stale_after_s,
            "deny_new": bool(report.deny_new) if report is not None else False,
            "last_error": report.error if report is not None else None,
            "failing_since": host.failing_since,
            "placed_since_answer": host.load - len(sessions),
        })
    duplicates = directory.duplicates
    return {"hosts": out, "duplicates": [{"user": u, "servers": list(s)} for u, s in sorted(duplicates.items())]}


def host_sessions(view: ReadModel, server: str) -> dict[str, Any]:
    report = view.host_sessions().reports.get(server)
    sessions = report.sessions if report is not None else ()
    return {"server": server, "answered_at": report.at if report is not None else None,
            "sessions": [{"user": printable(s.user), "domain": printable(s.domain), "state": str(s.state),
                          "id": s.id, "logon": s.logon, "disconnected": s.disconnected, "client": s.client}
                         for s in sessions]}
