"""Command line: argument parsing only; the work is done elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from rdpbalancer import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdpbalancer", description="Load balancer for RDP farms.")
    parser.add_argument("--version", action="version", version=f"rdpbalancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the balancer in the foreground")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration file")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {"run": _run, "check-config": _check}
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
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from rdpbalancer.app import Balancer
    from rdpbalancer.directory.errors import DirectoryError
    from rdpbalancer.logs import setup_logging
    from rdpbalancer.relay.listener import ListenError
    from rdpbalancer.store import StoreError

    setup_logging(config.log.level, config.log.format)

    async def serve() -> None:
        await Balancer(config).run()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve())
    except (ListenError, StoreError, DirectoryError) as exc:
        print(f"rdpbalancer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
