"""The OpenAPI 3.1 description of the admin API, served at /api/v1/openapi.json."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from rdpbalancer import __version__
from rdpbalancer.admin.inputs import (
    ApiInput,
    ExplainQuery,
    FlushBody,
    ImportBody,
    StateBody,
    StickyBody,
    StickyQuery,
    WeightBody,
)
from rdpbalancer.hosts.report import ReportIn


def _op(summary: str, *, body: type[BaseModel] | None = None, query: type[ApiInput] | None = None,
        mutating: bool = False, codes: tuple[int, ...] = (200,)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {str(c): {"description": "see summary"} for c in codes}}
    if body is not None or query is not None:
        op["responses"].setdefault("400", {"description": "the request is not what this endpoint takes "
                                                          "(the error names the field)"})
    if mutating:
        op["security"] = [{"bearer": []}]
        op["responses"].update({"401": {"description": "missing or wrong token"},
                                "403": {"description": "no token_file configured: read-only"}})
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(body)}}}
    if query is not None:
        schema = _schema(query)
        op["parameters"] = [{"name": name, "in": "query", "required": False, "schema": _nullable_off(prop)}
                            for name, prop in schema["properties"].items()]
    return op


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema, inlined (no $defs): what the handler validates is what is described."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    for name, definition in defs.items():
        text = text.replace(json.dumps({"$ref": f"#/$defs/{name}"}), json.dumps(definition))
    return dict(json.loads(text))


def _nullable_off(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string, never JSON null: `str | None` is just a string."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    out = dict(options[0]) if len(options) == 1 else {"anyOf": options}
    out.update({k: v for k, v in prop.items() if k not in ("anyOf", "default", "title")})
    out.pop("title", None)
    return out


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "rdpbalancer admin API", "version": __version__},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                       "hostToken": {"type": "http", "scheme": "bearer",
                                                     "description": "the host's own token ([sessions] push_tokens)"}}},
    "paths": {
        "/healthz": {"get": _op("200 when listeners are up and a server can take users, else 503",
                                codes=(200, 503))},
        "/metrics": {"get": _op("Prometheus text exposition")},
        "/api/v1/openapi.json": {"get": _op("this description")},
        "/api/v1/servers": {"get": _op("servers: pools, weights, admin state, health, sessions, homed users")},
        "/api/v1/servers/{name}/state": {"parameters": [_path_param("name")], "post": _op(
            "set the admin state", body=StateBody, mutating=True, codes=(200, 400, 404))},
        "/api/v1/servers/{name}/weight": {"parameters": [_path_param("name")], "post": _op(
            "set the weight in every pool", body=WeightBody, mutating=True, codes=(200, 400, 404))},
        "/api/v1/sessions": {"get": _op("live sessions")},
        "/api/v1/sessions/{id}": {"parameters": [_path_param("id")], "delete": _op(
            "close a session", mutating=True, codes=(200, 404))},
        "/api/v1/sticky": {"get": _op("sticky entries, paged", query=StickyQuery)},
        "/api/v1/sticky/{user}": {
            "parameters": [_path_param("user")],
            "get": _op("one user's entry", codes=(200, 404)),
            "put": _op("point a user at a server", body=StickyBody, mutating=True, codes=(200, 400)),
            "delete": _op("forget a user", mutating=True, codes=(200, 404)),
        },
        "/api/v1/sticky/flush": {"post": _op("forget every user of a server", mutating=True,
                                             body=FlushBody,
                                             codes=(200, 400))},
        "/api/v1/sticky/import": {"post": _op("import entries", body=ImportBody, mutating=True, codes=(200, 207, 400))},
        "/api/v1/reload": {"post": _op("reload the configuration file", mutating=True, codes=(200, 422))},
        "/api/v1/handoff": {"post": _op("graceful restart: a new process takes the listeners, this one finishes "
                                        "its sessions", mutating=True, codes=(202, 409))},
        "/api/v1/explain": {"get": _op("where would this user go, and why",
                                       query=ExplainQuery)},
        "/api/v1/routes": {"get": _op("the routing rules")},
        "/api/v1/groups": {"get": _op("groups and directory sync status")},
        "/api/v1/config": {"get": _op("configuration file, load and reload status")},
        "/api/v1/decisions": {"get": _op("recent routing decisions, newest first")},
        "/api/v1/workers": {"get": _op("the balancer's processes: the primary and its workers ([balancer] workers)")},
        "/api/v1/events": {"get": _op("server health changes, newest first")},
        "/api/v1/pools": {"get": _op("pools and their servers")},
        "/api/v1/hosts": {"get": _op("session directory: each host's real sessions, the data's age and errors, "
                                     "duplicates")},
        "/api/v1/hosts/{name}/sessions": {
            "parameters": [_path_param("name")],
            "get": _op("the sessions one host reports", codes=(200, 404)),
            "put": {**_op("a host pushes its session list ([sessions] source = \"push\"); authenticated with "
                          "that host's own token from push_tokens, not the admin token", body=ReportIn,
                          codes=(200, 400, 401, 404, 409, 413)),
                    "security": [{"hostToken": []}]},
        },
    },
}
