"""`rdpbalancer ctl`: the admin API of a running balancer, for scripts and shells.

    rdpbalancer ctl servers
    rdpbalancer ctl drain TS02
    rdpbalancer ctl --json sessions | jq ...
    rdpbalancer ctl sticky export > sticky.json

Output is an aligned table by default and the API's own JSON with `--json`. Exit status: 0 on
success, 1 when the API refused or could not be reached, 2 for bad arguments or input files.
Only the standard library is used (urllib), so `ctl` starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdpbalancer import ctl_views as views
from rdpbalancer.ctl_client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    EXIT_USAGE,
    TOKEN_ENV,
    URL_ENV,
    ApiClient,
    CtlError,
    resolve_target,
)
from rdpbalancer.ctl_sticky import (
    IMPORT_CHUNK,
    export_entries,
    import_entries,
    parse_export,
    parse_haproxy_dump,
)
from rdpbalancer.ctl_table import safe

MAX_WEIGHT = 256  # config.types.MAX_WEIGHT; the API checks it too
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

EPILOG = f"""\
where the balancer is: --url and --token-file, else ${URL_ENV} and ${TOKEN_ENV} (the token itself),
else [admin] listen and token_file of the configuration given with -c; default {DEFAULT_URL}.
Reads need no token unless [admin] read_auth = true; every change does.
exit status: 0 ok, 1 the API refused or cannot be reached, 2 bad arguments or input file."""


@dataclass(slots=True)
class Output:
    """What a command produced: `data` for --json, `text` for people, `problems` for stderr."""

    data: Any
    text: str
    problems: list[str] = field(default_factory=list)
    exit_code: int = 0


Handler = Callable[[ApiClient, argparse.Namespace], Output]


# -- entry points -------------------------------------------------------------------------------------

def add_ctl_parser(sub: Any) -> None:
    """Add `ctl` to the subcommands of `rdpbalancer` (cli.py); `run_ctl` runs the parsed arguments."""
    parser = sub.add_parser("ctl", help="query and steer a running balancer through its admin API",
                            description=__doc__.split("\n\n")[0], epilog=EPILOG, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(parser)


def run_ctl(args: argparse.Namespace) -> int:
    try:
        client = ApiClient(resolve_target(args.url, args.token_file, args.config), args.timeout)
        output = args.handler(client, args)
    except CtlError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return _emit(output, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """`rdpbalancer ctl ...` without cli.py: `main(["servers"])`."""
    parser = argparse.ArgumentParser(prog="rdpbalancer ctl", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run_ctl(args)


def _emit(output: Output, as_json: bool) -> int:
    try:
        if as_json:
            print(json.dumps(output.data, indent=2, ensure_ascii=False))
        elif output.text:
            print(output.text)
        if not as_json:
            for problem in output.problems:
                _error(problem)
        sys.stdout.flush()
    except BrokenPipeError:  # `ctl ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return output.exit_code


def _error(message: str) -> None:
    print(f"rdpbalancer ctl: {safe(message, keep_newlines=True)}", file=sys.stderr)


# -- the parser ---------------------------------------------------------------------------------------

def _configure(parser: argparse.ArgumentParser) -> None:
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)  # the same options after the command: `ctl servers --json`

    def command(name: str, handler: Handler, help_text: str, parent: Any = commands) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text,
                                                         parents=[common], allow_abbrev=False)
        cmd.set_defaults(handler=handler)
        return cmd

    command("servers", _servers, "servers: pools and weights, state, health, sessions, homed users")
    for state, meaning in (("drain", "no new users; users homed there still reach it"),
                           ("ready", "back in service"), ("maint", "nobody; its users are moved at once")):
        command(state, _set_state, f"set a server to {state}: {meaning}").add_argument("server", metavar="SERVER")
    weight = command("weight", _set_weight, "set a server's weight in every pool (0 = no new users)")
    weight.add_argument("server", metavar="SERVER")
    weight.add_argument("weight", metavar="N", type=_weight)
    command("sessions", _sessions, "live sessions")
    command("close", _close, "close a live session").add_argument("session", metavar="SESSION_ID")
    command("reload", _reload, "reload the configuration file (as SIGHUP does)")
    _add_explain(command("explain", _explain, "where would this user go now, and why (live health and table)"))
    command("config", _config, "configuration file, load and reload status")
    command("events", _events, "server health changes, newest first")
    command("decisions", _decisions, "recent routing decisions, newest first")
    sticky = commands.add_parser("sticky", help="the sticky table: user -> server", parents=[common],
                                 allow_abbrev=False)
    _add_sticky(sticky, command)


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("where the balancer is")
    group.add_argument("--url", default=default(None), help=f"admin API base URL (default {DEFAULT_URL})")
    group.add_argument("--token-file", default=default(None), metavar="FILE", help="file holding the admin token")
    group.add_argument("-c", "--config", default=default(None), metavar="FILE",
                       help="the balancer's configuration: use its [admin] listen and token_file")
    group.add_argument("--timeout", default=default(DEFAULT_TIMEOUT_S), type=_positive_float, metavar="SECONDS",
                       help=f"for each request (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--json", action="store_true", default=default(False), help="print the API's JSON")


def _add_explain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", metavar="USER", nargs="?", help="the name the client sends (omit: no cookie)")
    parser.add_argument("--source", default="0.0.0.0", help="client IP address (default 0.0.0.0)")
    parser.add_argument("--token", dest="routing_token",
                        help='routing token: "msts=IP.PORT.0000" or "tsv://MS Terminal Services Plugin.1.X"')
    parser.add_argument("--listener", help="the listen address the client comes in on (default: the first)")


def _add_sticky(sticky: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = sticky.add_subparsers(dest="sticky_command", required=True, metavar="ACTION")
    command("get", _sticky_get, "show a user's entry", sub).add_argument("user", metavar="USER")
    put = command("set", _sticky_set, "point a user at a server", sub)
    put.add_argument("user", metavar="USER")
    put.add_argument("server", metavar="SERVER")
    put.add_argument("--pool", help="the pool, when the server is in several (default: its first)")
    command("del", _sticky_del, "forget a user", sub).add_argument("user", metavar="USER")
    command("flush", _sticky_flush, "forget every user of a server", sub).add_argument("server", metavar="SERVER")
    export = command("export", _sticky_export, 'every entry as JSON {"entries": [...]}', sub)
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
    imp = command("import", _sticky_import, "set the entries of an export file (- = stdin)", sub)
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--chunk", type=_chunk, default=IMPORT_CHUNK, help=f"entries per request ({IMPORT_CHUNK})")
    hap = command("import-haproxy", _sticky_import_haproxy, "import an HAProxy `show table` dump (- = stdin)", sub)
    hap.add_argument("dump", metavar="DUMP")
    hap.add_argument("--servers", type=_names, metavar="TS01,TS02,...",
                     help="the backend's server names in id order, for dumps without server_key")
    hap.add_argument("--pool", help="the pool for every entry (default: the server's first)")
    hap.add_argument("--dry-run", action="store_true", help="print the entries that would be imported")


def _weight(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"weight must be a whole number from 0 to {MAX_WEIGHT}, not {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _chunk(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 10000, not {text!r}")
    return int(text)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected server names separated by commas, not {text!r}")
    return names


def _segment(value: str) -> str:
    """A user name or id as one URL path segment ('/' and '%' included)."""
    return urllib.parse.quote(value, safe="")


# -- servers and sessions -----------------------------------------------------------------------------

def _servers(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/servers")
    return Output(data, views.servers(data))


def _set_state(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("POST", f"/api/v1/servers/{_segment(args.server)}/state", {"state": args.ctl_command})
    return Output(data, views.server_changed(data))


def _set_weight(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("POST", f"/api/v1/servers/{_segment(args.server)}/weight", {"weight": args.weight})
    return Output(data, views.server_changed(data))


def _sessions(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/sessions")
    return Output(data, views.sessions(data))


def _close(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("DELETE", f"/api/v1/sessions/{_segment(args.session)}")
    return Output(data, f"closed session {safe(data.get('closed'))}")


def _reload(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.call("POST", "/api/v1/reload")
    return Output(data, views.reloaded(data))


def _explain(client: ApiClient, args: argparse.Namespace) -> Output:
    query = {"source": args.source}
    for name, value in (("user", args.user), ("token", args.routing_token), ("listener", args.listener)):
        if value:
            query[name] = value
    data = client.get("/api/v1/explain", query)
    return Output(data, views.explain(data, args.user))


def _config(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/config")
    return Output(data, views.config(data))


def _events(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/events")
    return Output(data, views.events(data))


def _decisions(client: ApiClient, _: argparse.Namespace) -> Output:
    data = client.get("/api/v1/decisions")
    return Output(data, views.decisions(data))


# -- sticky -----------------------------------------------------------------------------------------------

def _sticky_get(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.get(f"/api/v1/sticky/{_segment(args.user)}")
    return Output(data, views.sticky_entry(data))


def _sticky_set(client: ApiClient, args: argparse.Namespace) -> Output:
    body = {"server": args.server} | ({"pool": args.pool} if args.pool else {})
    data = client.call("PUT", f"/api/v1/sticky/{_segment(args.user)}", body)
    return Output(data, f"{safe(data['user'])} -> {safe(data['server'])} (pool {safe(data['pool'])})")


def _sticky_del(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("DELETE", f"/api/v1/sticky/{_segment(args.user)}")
    return Output(data, f"deleted the entry of {safe(data['deleted'])}")


def _sticky_flush(client: ApiClient, args: argparse.Namespace) -> Output:
    data = client.call("POST", "/api/v1/sticky/flush", {"server": args.server})
    return Output(data, f"{safe(args.server)}: {data['deleted']} entr{'y' if data['deleted'] == 1 else 'ies'} "
                        "deleted")


def _sticky_export(client: ApiClient, args: argparse.Namespace) -> Output:
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


def _sticky_import(client: ApiClient, args: argparse.Namespace) -> Output:
    entries = parse_export(_read_input(args.file), args.file)
    result = import_entries(client, entries, args.chunk)
    return Output(result.as_json(), views.import_report(result.imported, result.errors), result.errors,
                  1 if result.errors else 0)


def _sticky_import_haproxy(client: ApiClient, args: argparse.Namespace) -> Output:
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
