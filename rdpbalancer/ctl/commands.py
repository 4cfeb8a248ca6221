"""The commands of `rdpbalancer ctl`: each calls the admin API and says what to print.

A command takes the API client and the parsed arguments and returns an :class:`Output`: the
API's JSON (printed with `--json`), the text for people, problems for stderr, the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdpbalancer.ctl import views
from rdpbalancer.ctl.client import EXIT_USAGE, ApiClient, CtlError
from rdpbalancer.ctl.sticky import export_entries, import_entries, parse_export, parse_haproxy_dump
from rdpbalancer.ctl.table import safe


@dataclass(slots=True)
class Output:
    """What a command produced: `data` for --json, `text` for people, `problems` for stderr."""

    data: Any
    text: str
    problems: list[str] = field(default_factory=list)
    exit_code: int = 0


Command = Callable[[ApiClient, argparse.Namespace], Output]


def _segment(value: str) -> str:
    """A user name or id as one URL path segment ('/' and '%' included)."""
    return urllib.parse.quote(value, safe="")


# -- servers and sessions -----------------------------------------------------------------------------

def servers(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/servers")
    return Output(data, views.servers(data))


def set_state(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("POST", f"/api/v1/servers/{_segment(args.server)}/state", {"state": args.ctl_command})
    return Output(data, views.server_changed(data))


def set_weight(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("POST", f"/api/v1/servers/{_segment(args.server)}/weight", {"weight": args.weight})
    return Output(data, views.server_changed(data))


def sessions(client: ApiClient, args: argparse.Namespace) -> Output:
    host = getattr(args, "host", None)
    if host is not None:
        data = client.get(f"/api/v1/hosts/{_segment(host)}/sessions")
        return Output(data, views.host_sessions(data))
    data = client.get("/api/v1/sessions")
    return Output(data, views.sessions(data))


def hosts(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/hosts")
    return Output(data, views.hosts(data))


def close(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("DELETE", f"/api/v1/sessions/{_segment(args.session_id)}")
    return Output(data, f"closed session {safe(data.get('closed'))}")


def reload(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.call("POST", "/api/v1/reload")
    return Output(data, views.reloaded(data))


def handoff(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.call("POST", "/api/v1/handoff")
    return Output(data, f"handoff started by pid {safe(data.get('old_pid'))}: a new process takes the listeners, "
                        "this one finishes its sessions (see the log)")


def explain(client: ApiClient, args: argparse.Namespace) -> Output:
    query = {"source": args.source}
    for name, value in (("user", args.user), ("token", args.routing_token), ("listener", args.listener)):
        if value:
            query[name] = value
    data = client.get("/api/v1/explain", query)
    return Output(data, views.explain(data, args.user))


def config(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/config")
    return Output(data, views.config(data))


def events(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/events")
    return Output(data, views.events(data))


def decisions(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/decisions")
    return Output(data, views.decisions(data))


# -- sticky -----------------------------------------------------------------------------------------------

def sticky_get(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.get(f"/api/v1/sticky/{_segment(args.user)}")
    return Output(data, views.sticky_entry(data))


def sticky_set(client: ApiClient, args: argparse.Namespace) -> Output:
    body = {"server": args.server} | ({"pool": args.pool} if args.pool else {})
    data = client.call("PUT", f"/api/v1/sticky/{_segment(args.user)}", body)
    return Output(data, f"{safe(data['user'])} -> {safe(data['server'])} (pool {safe(data['pool'])})")


def sticky_del(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("DELETE", f"/api/v1/sticky/{_segment(args.user)}")
    return Output(data, f"deleted the entry of {safe(data['deleted'])}")


def sticky_flush(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("POST", "/api/v1/sticky/flush", {"server": args.server})
    return Output(data, f"{safe(args.server)}: {data['deleted']} entr{'y' if data['deleted'] == 1 else 'ies'} "
                        "deleted")


def sticky_export(client: ApiClient, args: argparse.Namespace) -> Output:
    data = {"entries": export_entries(client)}
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if args.output is None:
        return Output(data, text, [f"exported {len(data['entries'])} entries"])
    _write_private(Path(args.output), text + "\n")
    summary = f"exported {len(data['entries'])} entries to {args.output}"
    return Output({"exported": len(data["entries"]), "file": args.output}, summary)


def _write_private(path: Path, text: str) -> None:
    """User names are personal data: the file is created 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise CtlError(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def _read_input(name: str) -> str:
    try:
        if name == "-":
            return sys.stdin.read()
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CtlError(f"cannot read {name}: {reason}", EXIT_USAGE) from None


def sticky_import(client: ApiClient, args: argparse.Namespace) -> Output:
    entries = parse_export(_read_input(args.file), args.file)
    result = import_entries(client, entries, args.chunk)
    return Output(result.as_json(), views.import_report(result.imported, result.errors), result.errors,
                  1 if result.errors else 0)


def sticky_import_haproxy(client: ApiClient, args: argparse.Namespace) -> Output:
    dump = parse_haproxy_dump(_read_input(args.dump), args.servers, args.pool)
    skipped = [f"skipped {line}" for line in dump.skipped]
    if args.dry_run:
        data = {"entries": dump.entries, "skipped": dump.skipped}
        return Output(data, json.dumps({"entries": dump.entries}, indent=2, ensure_ascii=False), skipped,
                      1 if skipped else 0)
    result = import_entries(client, dump.entries)
    data = result.as_json() | {"skipped": dump.skipped}
    report = views.import_report(result.imported, result.errors, dump.skipped)
    return Output(data, report, skipped + result.errors, 1 if skipped or result.errors else 0)
