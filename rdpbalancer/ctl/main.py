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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rdpbalancer.ctl import commands as cmd
from rdpbalancer.ctl.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    EXIT_USAGE,
    TOKEN_ENV,
    URL_ENV,
    ApiClient,
    CtlError,
    resolve_target,
)
from rdpbalancer.ctl.commands import Command, Output
from rdpbalancer.ctl.sticky import IMPORT_CHUNK
from rdpbalancer.ctl.table import safe
from rdpbalancer.runtime import positive_seconds

MAX_WEIGHT = 256  # config.types.MAX_WEIGHT; the API checks it too
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

DESCRIPTION = "Query and steer a running balancer through its admin API."
EPILOG = f"""\
where the balancer is: --url and --token-file, else ${URL_ENV} and ${TOKEN_ENV} (the token itself),
else [admin] listen and token_file of the configuration given with -c; default {DEFAULT_URL}.
Reads need no token unless [admin] read_auth = true; every change does.
exit status: 0 ok, 1 the API refused or cannot be reached, 2 bad arguments or input file."""


# -- entry points -------------------------------------------------------------------------------------

def add_ctl_parser(sub: Any) -> None:
    """Add `ctl` to the subcommands of `rdpbalancer` (cli.py); `run_ctl` runs the parsed arguments."""
    parser = sub.add_parser("ctl", help="query and steer a running balancer through its admin API",
                            description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
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
    parser = argparse.ArgumentParser(prog="rdpbalancer ctl", description=DESCRIPTION, epilog=EPILOG,
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
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)  # the same options after the command: `ctl servers --json`
    top = _Commands(parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND"), common)
    top.add("servers", cmd.servers, "servers: pools and weights, state, health, sessions, homed users")
    for state, meaning in (("drain", "no new users; users homed there still reach it"),
                           ("ready", "back in service"), ("maint", "nobody; its users are moved at once")):
        top.add(state, cmd.set_state, f"set a server to {state}: {meaning}", "SERVER")
    weight = top.add("weight", cmd.set_weight, "set a server's weight in every pool (0 = no new users)", "SERVER")
    weight.add_argument("weight", metavar="N", type=_weight)
    listed = top.add("sessions", cmd.sessions, "live sessions through this balancer, or with --host SERVER the "
                                               "sessions that host reports (session directory)")
    listed.add_argument("--host", metavar="SERVER", help="the sessions this server itself reports")
    top.add("hosts", cmd.hosts, "session directory: each host's real sessions, the data's age and errors, "
                                "users with sessions on several hosts")
    top.add("close", cmd.close, "close a live session", "SESSION_ID")
    top.add("reload", cmd.reload, "reload the configuration file (as SIGHUP does)")
    top.add("handoff", cmd.handoff, "graceful restart: a new process takes the listeners (as SIGUSR2 does)")
    _add_explain(top.add("explain", cmd.explain, "where would this user go now, and why (live health and table)"))
    top.add("config", cmd.config, "configuration file, load and reload status")
    top.add("events", cmd.events, "server health changes, newest first")
    top.add("decisions", cmd.decisions, "recent routing decisions, newest first")
    _add_sticky(top.group("sticky", "the sticky table: user -> server", dest="sticky_command"))


@dataclass(frozen=True, slots=True)
class _Commands:
    """Adds subcommands that share the common options, each bound to the function that runs it."""

    sub: Any  # argparse's _SubParsersAction
    common: argparse.ArgumentParser

    def add(self, name: str, command: Command, help_text: str, *positionals: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.sub.add_parser(
            name, help=help_text, description=help_text, parents=[self.common], allow_abbrev=False)
        parser.set_defaults(handler=command)
        for metavar in positionals:
            parser.add_argument(metavar.lower(), metavar=metavar)
        return parser

    def group(self, name: str, help_text: str, dest: str) -> _Commands:
        parser = self.sub.add_parser(name, help=help_text, description=help_text, parents=[self.common],
                                     allow_abbrev=False)
        return _Commands(parser.add_subparsers(dest=dest, required=True, metavar="ACTION"), self.common)


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("where the balancer is")
    group.add_argument("--url", default=default(None), help=f"admin API base URL (default {DEFAULT_URL})")
    group.add_argument("--token-file", default=default(None), metavar="FILE", help="file holding the admin token")
    group.add_argument("-c", "--config", default=default(None), metavar="FILE",
                       help="the balancer's configuration: use its [admin] listen and token_file")
    group.add_argument("--timeout", default=default(DEFAULT_TIMEOUT_S), type=positive_seconds, metavar="SECONDS",
                       help=f"for each request (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--json", action="store_true", default=default(False), help="print the API's JSON")


def _add_explain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", metavar="USER", nargs="?", help="the name the client sends (omit: no cookie)")
    parser.add_argument("--source", default="0.0.0.0", help="client IP address (default 0.0.0.0)")
    parser.add_argument("--token", dest="routing_token",
                        help='routing token: "msts=IP.PORT.0000" or "tsv://MS Terminal Services Plugin.1.X"')
    parser.add_argument("--listener", help="the listen address the client comes in on (default: the first)")


def _add_sticky(sticky: _Commands) -> None:
    sticky.add("get", cmd.sticky_get, "show a user's entry", "USER")
    put = sticky.add("set", cmd.sticky_set, "point a user at a server", "USER", "SERVER")
    put.add_argument("--pool", help="the pool, when the server is in several (default: its first)")
    sticky.add("del", cmd.sticky_del, "forget a user", "USER")
    sticky.add("flush", cmd.sticky_flush, "forget every user of a server", "SERVER")
    export = sticky.add("export", cmd.sticky_export, 'every entry as JSON {"entries": [...]}')
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
    imp = sticky.add("import", cmd.sticky_import, "set the entries of an export file (- = stdin)", "FILE")
    imp.add_argument("--chunk", type=_chunk, default=IMPORT_CHUNK, help=f"entries per request ({IMPORT_CHUNK})")
    hap = sticky.add("import-haproxy", cmd.sticky_import_haproxy, "import an HAProxy `show table` dump (- = stdin)",
                     "DUMP")
    hap.add_argument("--servers", type=_names, metavar="TS01,TS02,...",
                     help="the backend's server names in id order, for dumps without server_key")
    hap.add_argument("--pool", help="the pool for every entry (default: the server's first)")
    hap.add_argument("--dry-run", action="store_true", help="print the entries that would be imported")


def _weight(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"weight must be a whole number from 0 to {MAX_WEIGHT}, not {text!r}")
    return int(text)


def _chunk(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 10000, not {text!r}")
    return int(text)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected server names separated by commas, not {text!r}")
    return names
