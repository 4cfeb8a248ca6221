"""The OpenAPI 3.1 description of the admin API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from rdpbalancer import __version__


def _op(summary: str, *, body: dict[str, Any] | None = None, params: list[str] | None = None,
        mutating: bool = False, codes: tuple[int, ...] = (200,)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {str(c): {"description": "see summary"} for c in codes}}
    if mutating:
        op["security"] = [{"bearer": []}]
        op["responses"].update({"401": {"description": "missing or wrong token"},
                                "403": {"description": "no token_file configured: read-only"}})
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = [{"name": p, "in": "query", "required": False, "schema": {"type": "string"}}
                            for p in params]
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_STATE = {"type": "object", "required": ["state"], "additionalProperties": False,
          "properties": {"state": {"enum": ["ready", "drain", "maint"]}}}
_WEIGHT = {"type": "object", "required": ["weight"], "additionalProperties": False,
           "properties": {"weight": {"type": "integer", "minimum": 0, "maximum": 256}}}
_STICKY = {"type": "object", "required": ["server"],
           "properties": {"server": {"type": "string"}, "pool": {"type": "string"}}}
_IMPORT = {"type": "object", "required": ["entries"],
           "properties": {"entries": {"type": "array", "items": {"type": "object", "required": ["user", "server"],
                          "properties": {"user": {"type": "string"}, "server": {"type": "string"},
                                         "pool": {"type": "string"}}}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "rdpbalancer admin API", "version": __version__},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/healthz": {"get": _op("200 when listeners are up and a server can take users, else 503",
                                codes=(200, 503))},
        "/metrics": {"get": _op("Prometheus text exposition")},
        "/api/v1/servers": {"get": _op("servers: pools, weights, admin state, health, sessions, homed users")},
        "/api/v1/servers/{name}/state": {"parameters": [_path_param("name")], "post": _op(
            "set the admin state", body=_STATE, mutating=True, codes=(200, 400, 404))},
        "/api/v1/servers/{name}/weight": {"parameters": [_path_param("name")], "post": _op(
            "set the weight in every pool", body=_WEIGHT, mutating=True, codes=(200, 400, 404))},
        "/api/v1/sessions": {"get": _op("live sessions")},
        "/api/v1/sessions/{id}": {"parameters": [_path_param("id")], "delete": _op(
            "close a session", mutating=True, codes=(200, 404))},
        "/api/v1/sticky": {"get": _op("sticky entries, paged", params=["server", "limit", "offset"])},
        "/api/v1/sticky/{user}": {
            "parameters": [_path_param("user")],
            "get": _op("one user's entry", codes=(200, 404)),
            "put": _op("point a user at a server", body=_STICKY, mutating=True, codes=(200, 400)),
            "delete": _op("forget a user", mutating=True, codes=(200, 404)),
        },
        "/api/v1/sticky/flush": {"post": _op("forget every user of a server", mutating=True,
                                             body={"type": "object", "required": ["server"],
                                                   "properties": {"server": {"type": "string"}}},
                                             codes=(200, 400))},
        "/api/v1/sticky/import": {"post": _op("import entries", body=_IMPORT, mutating=True, codes=(200, 207, 400))},
        "/api/v1/reload": {"post": _op("reload the configuration file", mutating=True, codes=(200, 422))},
        "/api/v1/handoff": {"post": _op("graceful restart: a new process takes the listeners, this one finishes "
                                        "its sessions", mutating=True, codes=(202, 409))},
        "/api/v1/explain": {"get": _op("where would this user go, and why",
                                       params=["user", "source", "token", "listener"])},
        "/api/v1/routes": {"get": _op("the routing rules")},
        "/api/v1/groups": {"get": _op("groups and directory sync status")},
        "/api/v1/config": {"get": _op("configuration file, load and reload status")},
        "/api/v1/decisions": {"get": _op("recent routing decisions, newest first")},
        "/api/v1/workers": {"get": _op("the balancer's processes: the primary and its workers ([balancer] workers)")},
        "/api/v1/events": {"get": _op("server health changes, newest first")},
        "/api/v1/pools": {"get": _op("pools and their servers")},
    },
}
