"""The admin HTTP API (aiohttp, in the balancer's event loop), /metrics and the dashboard.

Reads are open by default (the API listens on loopback; `[admin] read_auth = true` closes them);
every mutation needs `Authorization: Bearer <token>` with the token from `[admin] token_file`,
compared in constant time. Without a token file the API is read-only. Errors are JSON
`{"error": "..."}` with a 4xx status that says what was wrong.

DNS rebinding: a web page the operator opens could point its own host name at 127.0.0.1 and
read the open API from the browser. So while the API listens on loopback, a request must name
a loopback host (or one in `[admin] allowed_hosts`) in its Host header; others get 421.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from rdpbalancer import clock
from rdpbalancer.admin import views
from rdpbalancer.admin.inputs import (
    ExplainQuery,
    FlushBody,
    ImportBody,
    InputError,
    M,
    StateBody,
    StickyBody,
    StickyQuery,
    WeightBody,
    check_entry,
    parse_body,
    parse_query,
)
from rdpbalancer.admin.openapi import OPENAPI
from rdpbalancer.explain import route_request
from rdpbalancer.hosts.report import MAX_REPORT_BYTES, ReportError, parse_report
from rdpbalancer.metrics import Metrics
from rdpbalancer.policy.identity import admin_key
from rdpbalancer.policy.model import AdminState
from rdpbalancer.ports import OperationsPort, ReadModel

log = logging.getLogger("rdpbalancer.admin")

PUSH_PATH = re.compile(r"/api/v1/hosts/[^/]+/sessions")
MAX_BODY_BYTES = 1024 * 1024  # an import of ~10,000 entries; anything larger is refused with 413
STATIC = Path(__file__).with_name("static")
VIEW_KEY: web.AppKey[ReadModel] = web.AppKey("view")
OPS_KEY: web.AppKey[OperationsPort] = web.AppKey("operations")
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics")


@dataclass(slots=True)
class Auth:
    """The token and whether reads need it; a reload replaces both in place (no restart)."""

    token: str | None
    read_auth: bool
    # Host names a request arriving on a loopback address may name (the loopback names, the
    # configured listen host, [admin] allowed_hosts); on other addresses only allowed_hosts, and
    # no check at all when that is empty (the network, not the browser, is the boundary there)
    loopback_hosts: frozenset[str] = frozenset()
    extra_hosts: frozenset[str] = frozenset()

    def allowed(self, local_host: str) -> frozenset[str] | None:
        """What the Host header may name for a request that arrived on `local_host`."""
        if _is_loopback(local_host):
            return self.loopback_hosts | self.extra_hosts
        return self.extra_hosts or None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


AUTH_KEY: web.AppKey[Auth] = web.AppKey("auth", Auth)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


# -- middlewares ----------------------------------------------------------------------------------

@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError:
        raise
    except ConnectionResetError:  # the client left while sending its body: nothing to answer, no bug
        log.debug("admin API %s %s: the client went away", request.method, request.path)
        raise ApiError(400, "connection lost while reading the request body") from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes") from None
    except web.HTTPException as exc:
        if exc.status >= 400:
            raise ApiError(exc.status, exc.reason) from None
        raise
    except Exception:  # the request edge: log it, answer 500, keep serving
        log.exception("admin API %s %s failed", request.method, request.path)
        raise ApiError(500, "internal error (logged)") from None


@web.middleware
async def _no_stale_assets(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Static files revalidate: after an upgrade the browser must not keep an old dashboard.js."""
    response = await handler(request)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"
    return response


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@web.middleware
async def _host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    local = transport.get_extra_info("sockname") if transport is not None else None
    # over TCP only (a Unix socket's sockname is a path): a wildcard listener (0.0.0.0, ::) is
    # reachable on 127.0.0.1 from a local browser too, so the address the request came in on
    # decides, not the configured one
    allowed = request.app[AUTH_KEY].allowed(local[0]) if isinstance(local, tuple) else None
    if allowed is not None and _host_name(request.headers.get("Host", "")) not in allowed:
        raise ApiError(421, f"Host {request.headers.get('Host', '')!r} is not a name of this API: on loopback it "
                            "answers to localhost, 127.0.0.1 and [::1], plus [admin] allowed_hosts (a page "
                            "re-pointing its own name at 127.0.0.1 must not read it: DNS rebinding)")
    return await handler(request)


def _host_name(host: str) -> str:
    """The host of a Host header, without its port: 'a.example:9000' -> 'a.example', '[::1]:9000' -> '[::1]'."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "PUT" and PUSH_PATH.fullmatch(request.path):
        return await handler(request)  # a host's push: its own token, checked by the handler
    mutating = request.method not in ("GET", "HEAD", "OPTIONS")
    public = request.path in ("/healthz", "/api/v1/openapi.json") or request.path.startswith("/static/") \
        or request.path == "/"
    auth = request.app[AUTH_KEY]
    if mutating or (auth.read_auth and not public):
        token = auth.token
        if token is None:
            raise ApiError(403, "the API is read-only: no [admin] token_file is configured")
        # surrogateescape: a header that is not UTF-8 is a wrong token (401), not a crash (500)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                                   token.encode()):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
    return await handler(request)


# Sent with every answer, errors included: JSON carrying client-chosen names is never sniffed as
# HTML, and no other site may frame the dashboard (the page's <meta> CSP cannot say
# frame-ancestors), so its buttons cannot be clickjacked.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "frame-ancestors 'none'", "Referrer-Policy": "no-referrer"}


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# -- helpers ------------------------------------------------------------------------------------------

def _view(request: web.Request) -> ReadModel:
    return request.app[VIEW_KEY]


def _ops(request: web.Request) -> OperationsPort:
    return request.app[OPS_KEY]


async def _body(request: web.Request, model: type[M]) -> M:
    if (request.content_length or 0) > MAX_BODY_BYTES:  # refused before a byte of it is read
        raise ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        return parse_body(model, await request.read())
    except InputError as exc:
        raise ApiError(400, str(exc)) from None


def _query(request: web.Request, model: type[M]) -> M:
    try:
        return parse_query(model, dict(request.query))
    except InputError as exc:
        raise ApiError(400, str(exc)) from None


def _server_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in _view(request).snapshot.policy.servers():
        raise ApiError(404, f"no server named {name!r}")
    return name


# -- handlers -------------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    body, healthy = views.health(_view(request))
    return _json(body, 200 if healthy else 503)


async def list_servers(request: web.Request) -> web.Response:
    return _json({"servers": views.servers(_view(request))})


async def set_state(request: web.Request) -> web.Response:
    name, body = _server_name(request), await _body(request, StateBody)
    _ops(request).set_admin_state(name, AdminState(body.state))
    return _json(next(s for s in views.servers(_view(request)) if s["name"] == name))


async def set_weight(request: web.Request) -> web.Response:
    name, body = _server_name(request), await _body(request, WeightBody)
    _ops(request).set_weight(name, body.weight)
    return _json(next(s for s in views.servers(_view(request)) if s["name"] == name))


async def list_sessions(request: web.Request) -> web.Response:
    sessions = [views.session(s) for s in _view(request).sessions.values()]
    return _json({"sessions": sessions})


async def close_session(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    if not _ops(request).close_session(session_id):
        raise ApiError(404, f"no session {session_id!r}")
    return _json({"closed": session_id})


def _key(request: web.Request) -> str:
    try:
        return admin_key(request.match_info["user"], strip_domain=_view(request).snapshot.config.identity.strip_domain)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def list_sticky(request: web.Request) -> web.Response:
    view, query = _view(request), _query(request, StickyQuery)
    page = view.sticky_page(query.server, query.offset, query.limit)
    return _json({"total": page.total, "offset": query.offset, "entries": [views.entry(e) for e in page.entries]})


async def get_sticky(request: web.Request) -> web.Response:
    view, key = _view(request), _key(request)
    entry = view.sticky_entry(key)
    if entry is None:
        raise ApiError(404, f"no sticky entry for {key!r}")
    return _json(views.entry(entry))


async def put_sticky(request: web.Request) -> web.Response:
    key, body = _key(request), await _body(request, StickyBody)
    try:
        entry = await _ops(request).set_sticky(key, body.server, body.pool)
    except KeyError:
        raise ApiError(400, f"no server named {body.server!r}") from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return _json(views.entry(entry))


async def delete_sticky(request: web.Request) -> web.Response:
    key = _key(request)
    if not await _ops(request).delete_sticky(key):
        raise ApiError(404, f"no sticky entry for {key!r}")
    return _json({"deleted": key})


async def flush_sticky(request: web.Request) -> web.Response:
    body = await _body(request, FlushBody)
    if body.server not in _view(request).snapshot.policy.servers():
        raise ApiError(400, f"body.server: no server named {body.server!r}")
    return _json({"deleted": await _ops(request).flush_sticky(body.server)})


async def import_sticky(request: web.Request) -> web.Response:
    """Body: {"entries": [{"user": "alice", "server": "TS01", "pool": optional}, ...]}: each entry
    is checked on its own; the good ones land, the others are listed (207)."""
    view, ops, body = _view(request), _ops(request), await _body(request, ImportBody)
    imported, errors = 0, []
    for i, item in enumerate(body.entries):
        try:
            entry = check_entry(item)
            key = admin_key(entry.user, strip_domain=view.snapshot.config.identity.strip_domain)
            await ops.set_sticky(key, entry.server, entry.pool)
            imported += 1
        except (InputError, ValueError) as exc:
            errors.append(f"entries[{i}]: {exc}")
        except KeyError:
            errors.append(f"entries[{i}]: no server named {item.get('server')!r}")
    return _json({"imported": imported, "errors": errors}, 200 if not errors else 207)


async def reload(request: web.Request) -> web.Response:
    error = await _ops(request).reload()
    if error is not None:
        raise ApiError(422, error)
    return _json({"reloaded": True, "config": views.config_status(_view(request))})


async def explain(request: web.Request) -> web.Response:
    view, query = _view(request), _query(request, ExplainQuery)
    listener = query.listener or views.config_status(view)["listen"][0]
    req = route_request(query.user, query.source, query.token, listener,
                        strip_domain=view.snapshot.config.identity.strip_domain)
    return _json(views.explain(view, req))


async def get_simple(request: web.Request) -> web.Response:
    view = _view(request)
    what = request.match_info["what"]
    data: dict[str, Callable[[], Any]] = {
        "routes": lambda: {"routes": views.routes(view)},
        "groups": lambda: views.groups(view),
        "config": lambda: views.config_status(view),
        "decisions": lambda: {"decisions": list(view.decisions)[::-1]},
        "events": lambda: {"events": [views.transition(t) for t in view.health_events()[::-1]]},
        "workers": lambda: {"workers": view.processes()},
        "pools": lambda: {"pools": [{"name": p.name, "balance": str(p.balance),
                                     "servers": [m.server.name for m in p.members]}
                                    for p in view.snapshot.policy.pools]},
    }
    if what not in data:
        raise ApiError(404, f"unknown resource {what!r}")
    return _json(data[what]())


async def list_hosts(request: web.Request) -> web.Response:
    return _json(views.hosts(_view(request)))


async def get_host_sessions(request: web.Request) -> web.Response:
    return _json(views.host_sessions(_view(request), _server_name(request)))


async def push_host_sessions(request: web.Request) -> web.Response:
    """A host's own list (source = "push"), authenticated with that host's token only: a host's
    token cannot push for another host, nor do anything else in the API."""
    name = _server_name(request)
    view = _view(request)
    source = next((h.source for h in view.host_sessions().hosts if h.source.server == name), None)
    if source is None or source.kind != "push":
        where = "has no session source" if source is None else f"has a {source.kind} source"
        raise ApiError(409, f"{name} {where}; pushes are taken only from hosts with source = \"push\"")
    token = view.snapshot.sessions.push_tokens.get(name)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer" or not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), token.encode()):
        raise ApiError(401, f"missing or wrong token for {name}: send 'Authorization: Bearer <its push token>'")
    if (request.content_length or 0) > MAX_REPORT_BYTES:
        raise ApiError(413, f"session list larger than {MAX_REPORT_BYTES} bytes")
    try:
        report = parse_report(name, await request.read(), clock.now())
    except ReportError as exc:
        raise ApiError(400, str(exc)) from None
    _ops(request).push_sessions(report)
    return _json({"server": name, "sessions": len(report.sessions)})


async def handoff(request: web.Request) -> web.Response:
    """Start handing the listeners to a new process (this API goes away when it takes over;
    the new process's API answers on the same address). 202: started; the outcome is logged."""
    if not _ops(request).start_handoff():
        raise ApiError(409, "a handoff already happened or is in progress")
    return _json({"handoff": "started", "old_pid": os.getpid()}, 202)


async def openapi(_: web.Request) -> web.Response:
    return _json(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def dashboard(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-store"})


# -- the application ----------------------------------------------------------------------------------

def build_app(view: ReadModel, ops: OperationsPort, exporter: Metrics, auth: Auth) -> web.Application:
    app = web.Application(middlewares=[_errors, _host_check, _auth, _no_stale_assets], client_max_size=MAX_BODY_BYTES)
    app[VIEW_KEY], app[OPS_KEY], app[METRICS_KEY], app[AUTH_KEY] = view, ops, exporter, auth
    app.on_response_prepare.append(_security_headers)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/", dashboard)
    r.add_static("/static/", STATIC)
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/api/v1/servers", list_servers)
    r.add_post("/api/v1/servers/{name}/state", set_state)
    r.add_post("/api/v1/servers/{name}/weight", set_weight)
    r.add_get("/api/v1/sessions", list_sessions)
    r.add_delete("/api/v1/sessions/{id}", close_session)
    r.add_get("/api/v1/sticky", list_sticky)
    r.add_post("/api/v1/sticky/flush", flush_sticky)
    r.add_post("/api/v1/sticky/import", import_sticky)
    r.add_get("/api/v1/sticky/{user}", get_sticky)
    r.add_put("/api/v1/sticky/{user}", put_sticky)
    r.add_delete("/api/v1/sticky/{user}", delete_sticky)
    r.add_post("/api/v1/reload", reload)
    r.add_post("/api/v1/handoff", handoff)
    r.add_get("/api/v1/explain", explain)
    r.add_get("/api/v1/hosts", list_hosts)
    r.add_get("/api/v1/hosts/{name}/sessions", get_host_sessions)
    r.add_put("/api/v1/hosts/{name}/sessions", push_host_sessions)
    r.add_get("/api/v1/{what}", get_simple)
    return app
