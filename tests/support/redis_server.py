"""A real redis-server on loopback, started and stopped by PID (no persistence, its own dir)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.balancer import free_port, stop_process, wait_for_listener


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (scripts/install-test-deps.sh installs it)")
        self.workdir, self.port, self.extra = workdir, port or free_port(), extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no", *self.extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_listener(self.proc, ("127.0.0.1", self.port), self.workdir / "redis.log", timeout_s)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
