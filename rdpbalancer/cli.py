"""Command line: argument parsing only; the work is done elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rdpbalancer import __version__
from rdpbalancer.ctl import add_ctl_parser, run_ctl
from rdpbalancer.demo import add_demo_parser, run_demo
from rdpbalancer.runtime import loop_factory

if TYPE_CHECKING:
    from rdpbalancer.config.schema import Config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdpbalancer", description="Load balancer for RDP farms.")
    parser.add_argument("--version", action="version", version=f"rdpbalancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the balancer in the foreground")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration file")
    run.add_argument("--takeover-fd", type=int, help=argparse.SUPPRESS)  # set by a handoff (see handoff.py)
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration file")
    ex = sub.add_parser("explain", help="show where a user would be routed, and why")
    ex.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration file")
    ex.add_argument("--user", help="the user name as the client sends it (mstshash cookie)")
    ex.add_argument("--source", default="0.0.0.0", help="client IP address (default 0.0.0.0)")
    ex.add_argument("--at", help='date and time, e.g. "2026-11-25T09:00" (local time) or with an offset')
    ex.add_argument("--token", help='routing token: "msts=IP.PORT.0000" or "tsv://MS Terminal Services Plugin.1.X"')
    ex.add_argument("--listener", help="the listen address the client comes in on (default: the first)")
    ex.add_argument("--down", action="append", default=[], metavar="SERVER", help="treat SERVER as down")
    mig = sub.add_parser("migrate-haproxy", help="print an rdpbalancer configuration equivalent to an HAProxy one")
    mig.add_argument("haproxy_cfg", metavar="HAPROXY_CFG")
    mig.add_argument("--acl-dir", metavar="DIR", help="where the ACL files (-f) are, if not at their original paths")
    add_ctl_parser(sub)
    add_demo_parser(sub)
    worker = sub.add_parser("worker", help="(internal) a worker process, started by `run` when workers > 1")
    worker.add_argument("--fd", type=int, required=True, help="the inherited channel to the primary")
    worker.add_argument("--index", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run, "check-config": _check, "explain": _explain, "migrate-haproxy": _migrate,
        "ctl": run_ctl, "demo": run_demo, "worker": _worker,
    }
    return commands[args.command](args)


def _load(path: str):  # type: ignore[no-untyped-def]
    from rdpbalancer.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"rdpbalancer: invalid configuration\n{exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from rdpbalancer.config.compile import compile_config

    snapshot = compile_config(config)
    pools = ", ".join(f"{p.name} ({len(p.members)} servers)" for p in snapshot.policy.pools)
    print(f"{args.config}: OK; pools: {pools}")
    return _check_transparent(snapshot.relay.transparent)


def _check_transparent(servers: frozenset[str]) -> int:
    """Transparent mode: what this machine lacks of it (the capability, as this command runs;
    the routing). 1 when something is missing: the file is valid, the machine is not ready."""
    if not servers:
        return 0
    from rdpbalancer import transparent

    print(f"transparent mode for {', '.join(sorted(servers))}:")
    problems = [p for p in (transparent.capability_problem(),) if p is not None] + transparent.routing_findings()
    for problem in problems:
        print(f"  missing: {problem}")
    if not problems:
        print("  this process may open sockets from clients' addresses, and the routing that delivers the "
              "replies is in place (the hosts' route back to clients through this machine is not checkable here)")
    return 1 if problems else 0


def raise_fd_limit(max_connections: int | None) -> None:
    """Each connection takes 2 descriptors (4 with splice's pipes): the soft limit goes up to the
    hard one (often 1024 -> 524288). A `max_connections` the user set that the limit still cannot
    hold is logged; left out, it is derived from the limit (`compile.derived_max_connections`)."""
    import logging
    import resource

    from rdpbalancer.config.compile import FDS_PER_CONNECTION, RESERVED_FDS, derived_max_connections

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    needed = FDS_PER_CONNECTION * (max_connections or 0) + RESERVED_FDS
    if max_connections is not None and soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("rdpbalancer").warning(
            "open file limit %d is low for [limits] max_connections = %d (each connection needs up to %d, "
            "so %d in all): raise LimitNOFILE (systemd) or ulimit -n, or leave max_connections out to fit "
            "the limit", soft, max_connections, FDS_PER_CONNECTION, needed)
    elif max_connections is None and soft != resource.RLIM_INFINITY:
        logging.getLogger("rdpbalancer").info(
            "[limits] max_connections = %d per process (from the open file limit %d)",
            derived_max_connections(soft), soft)


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from rdpbalancer.admin.errors import AdminError
    from rdpbalancer.app import Balancer
    from rdpbalancer.directory.errors import DirectoryError
    from rdpbalancer.handoff import HandoffError
    from rdpbalancer.handoff.new import Takeover
    from rdpbalancer.logs import setup_logging
    from rdpbalancer.relay.listener import ListenError
    from rdpbalancer.store import StoreError
    from rdpbalancer.transparent import TransparentError
    from rdpbalancer.workers.primary import WorkerError

    setup_logging(config.log.level, config.log.format)
    raise_fd_limit(config.limits.max_connections)
    _say_if_loopback_only(config)

    async def serve() -> None:
        takeover = Takeover(args.takeover_fd) if args.takeover_fd is not None else None
        await Balancer(config).run(takeover)

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve())
    except (ListenError, StoreError, DirectoryError, AdminError, WorkerError, HandoffError, TransparentError) as exc:
        print(f"rdpbalancer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _say_if_loopback_only(config: Config) -> None:
    import logging

    from rdpbalancer.config.reach import loopback_only_notice

    notice = loopback_only_notice(config)
    if notice is not None:
        logging.getLogger("rdpbalancer").info(notice)


def _worker(args: argparse.Namespace) -> int:
    from rdpbalancer.workers.worker import main as worker_main

    return worker_main(args.index, args.fd)


def _explain(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from datetime import datetime

    from rdpbalancer.directory.errors import DirectoryError
    from rdpbalancer.explain import Question, explain
    from rdpbalancer.store import StoreError

    try:
        at = datetime.fromisoformat(args.at).astimezone().timestamp() if args.at else None
    except ValueError:
        print(f"rdpbalancer: --at {args.at!r}: expected e.g. 2026-11-25T09:00", file=sys.stderr)
        return 2
    question = Question(args.user, args.source, at, args.token, args.listener, tuple(args.down))
    try:
        print(asyncio.run(explain(config, question)))
    except (StoreError, DirectoryError) as exc:
        print(f"rdpbalancer: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rdpbalancer.migrate import MigrationError, translate_haproxy

    path = Path(args.haproxy_cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"rdpbalancer: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    acl_dir = Path(args.acl_dir).resolve() if args.acl_dir else None
    try:
        result = translate_haproxy(text, acl_dir=acl_dir, source_name=path.name)
    except MigrationError as exc:
        print(f"rdpbalancer: {path}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.toml)
    if result.differences:
        print(f"rdpbalancer: {len(result.differences)} setting(s) translated with a difference in meaning: "
              "see the comments at the end", file=sys.stderr)
    if result.untranslated:
        print(f"rdpbalancer: {len(result.untranslated)} directive(s) not translated: see the comments at the end",
              file=sys.stderr)
    return 0
