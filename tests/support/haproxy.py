"""A real HAProxy (the Debian package) in front of the balancer, as a TCP proxy that sends
PROXY protocol headers; stopped by PID."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.balancer import hold_port, wait_for_listener

_CFG = """\
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
"""
_PROXY = """\
frontend f{n}
    bind 127.0.0.1:{port}
    default_backend b{n}
backend b{n}
    server rdpb 127.0.0.1:{target} {send}{source}
"""


@contextmanager
def haproxy_in_front(workdir: Path, target: int, sends: tuple[str, ...] = ("send-proxy", "send-proxy-v2"),
                     source: str | None = None) -> Iterator[tuple[int, ...]]:
    """One HAProxy frontend per `sends` (e.g. send-proxy, send-proxy-v2), each forwarding to
    127.0.0.1:`target`, from `source` if given; yields their ports."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (scripts/install-test-deps.sh installs it)", pytrace=False)
    # chosen before it starts (HAProxy does not report a port it took), and held while it runs
    # (see hold_port): nothing else takes one before it binds them
    held = [hold_port() for _ in sends]
    ports = tuple(int(h.getsockname()[1]) for h in held)
    text = _CFG + "".join(_PROXY.format(n=n, port=port, target=target, send=send,
                                        source=f" source {source}" if source else "")
                          for n, (port, send) in enumerate(zip(ports, sends, strict=True)))
    cfg, log = workdir / "haproxy.cfg", workdir / "haproxy.log"
    workdir.mkdir(parents=True, exist_ok=True)
    cfg.write_text(text)
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
        try:
            for port in ports:
                wait_for_listener(proc, ("127.0.0.1", port), log, 10)
            yield ports
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        for h in held:
            h.close()
