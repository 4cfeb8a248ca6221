"""A real redis-server on loopback, started and stopped by PID (no persistence, its own dir)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from tests.support.balancer import hold_port, stop_process, wait_for_listener


class RedisServer:
    """Its port is chosen before it starts (`--port 0` turns TCP off: redis-server cannot take a
    port and say which), and held bound from then until `close()` (see `hold_port`): across a
    `stop()` and `start()` too, so that nothing else takes it while the server is down."""

    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (scripts/install-test-deps.sh installs it)")
        self.held: socket.socket | None = None
        if port is None:
            self.held = hold_port()
            port = int(self.held.getsockname()[1])
        self.workdir, self.port, self.extra = workdir, port, extra
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
        """The server stops; its port stays held (connections to it are refused) until `close()`."""
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.held is not None:
            self.held.close()
            self.held = None


class Sentinel:
    """A real `redis-server --sentinel` watching `master` as service `name` on loopback (stopped
    by PID). `quorum`: how many sentinels must agree that the master is down."""

    def __init__(self, workdir: Path, master: RedisServer, *, name: str = "rdpb", quorum: int = 1,
                 down_after_ms: int = 1000) -> None:
        # chosen before it starts (with port 0 it would listen on no TCP port): held until stop()
        self.held = hold_port()
        self.workdir, self.port = workdir, int(self.held.getsockname()[1])
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {workdir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\nsentinel failover-timeout {name} 10000\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        out = (self.workdir / "sentinel.log").open("ab")
        self.proc = subprocess.Popen(["redis-server", str(self.workdir / "sentinel.conf"), "--sentinel"],
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_for_listener(self.proc, ("127.0.0.1", self.port), self.workdir / "sentinel.log", 10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.held.close()
