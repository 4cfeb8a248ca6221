"""`source = "command"`: a program that prints one host's sessions as JSON (hosts/report.py) and
exits 0. "{server}", "{host}" and "{port}" in its arguments are replaced. Examples: the contrib
xrdp script over ssh, or a site's own inventory tool. The program gets no credentials from us
and no shell: the arguments are passed as they are."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable

from rdpbalancer.hosts.report import MAX_REPORT_BYTES, parse_report
from rdpbalancer.hosts.spec import HostSource
from rdpbalancer.policy.sessions import HostReport


def argv(source: HostSource) -> list[str]:
    """The command with its three placeholders replaced; every other brace stays as written (a
    program given inline, `python3 -c "...{...}..."`, keeps its own)."""
    values = {"{server}": source.server, "{host}": source.host, "{port}": str(source.port or "")}
    out = []
    for arg in source.command:
        text = arg
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        out.append(text)
    return out


async def query_command(source: HostSource, clock: Callable[[], float]) -> HostReport:
    args = argv(source)
    try:
        process = await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                       stderr=subprocess.PIPE, limit=MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise RuntimeError(f"cannot run {args[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await process.communicate()
    except BaseException:  # the poller's timeout, or shutdown: the program does not outlive the query
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["(nothing on stderr)"]
        raise RuntimeError(f"{args[0]} exited with {process.returncode}: {last[0][:200]}")
    return parse_report(source.server, out, clock())
