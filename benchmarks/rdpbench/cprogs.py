"""The C test server and load generator: build them, start the server, run the load generator."""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdpbench.netns import Net
from rdpbench.procs import BenchError, cpu_s, log_tail, pinned, stop

C_DIR = Path(__file__).resolve().parents[1] / "c"
PROGRAMS = ("rdpb_testserver", "rdpb_loadgen", "rdpb_sessions")
CFLAGS = ["-O2", "-Wall", "-Wextra", "-std=gnu11"]  # the same as benchmarks/c/Makefile
SERVER_READY_TIMEOUT_S = 5.0
LOADGEN_GRACE_S = 60.0  # beyond the load generator's own --timeout, before we give up on it


@dataclass(frozen=True)
class Binaries:
    server: Path
    loadgen: Path
    sessions: Path  # the session model (F-office, F-storm, F-video)


def build(out_dir: Path) -> Binaries:
    """Compile both programs with `cc -O2` into out_dir."""
    compiler = shutil.which("cc")
    if compiler is None:
        raise BenchError("no C compiler: `cc` is not on PATH (Debian: apt-get install gcc libc6-dev)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PROGRAMS:
        argv = [compiler, *CFLAGS, "-o", str(out_dir / name), str(C_DIR / f"{name}.c"), "-lm"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"building {name} failed:\n{done.stderr}")
    return Binaries(server=out_dir / "rdpb_testserver", loadgen=out_dir / "rdpb_loadgen",
                    sessions=out_dir / "rdpb_sessions")


class TestServer:
    """The C test server on `listeners` kernel-chosen ports of 127.0.0.1 (a context manager);
    with `net` (--netns veth), on its address in its own namespace."""

    def __init__(self, binary: Path, cpus: list[int], listeners: int, log: Path, net: Net | None = None) -> None:
        where = [] if net is None else ["--host", net.server_host]
        argv = pinned(cpus, [str(binary), "--listeners", str(listeners), *where])
        self.argv = argv if net is None else net.server(argv)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: list[int] = []

    def __enter__(self) -> TestServer:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=err, bufsize=0)
        assert self.proc.stdout is not None
        line = _read_line(self.proc, SERVER_READY_TIMEOUT_S)
        if not line:
            stop(self.proc)
            raise BenchError(f"test server did not start{log_tail(self.log)}")
        self.ports = list(json.loads(line)["ports"])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        return cpu_s(self.pid)


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """One line of the child's stdout, or "" if none comes within timeout_s.

    The pipe is unbuffered (bufsize=0), so nothing after the line is read ahead and lost.
    """
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return proc.stdout.readline().decode()


def loadgen_argv(binaries: Binaries, cpus: list[int], port: int, mode: str, conns: int, duration_s: float,
                 cookie_prefix: str, extra: dict[str, Any] | None = None, *, host: str | None = None,
                 net: Net | None = None) -> list[str]:
    """`host`: where to connect (default 127.0.0.1); `net`: run in the client's namespace (--netns veth)."""
    args = [str(binaries.loadgen), "--port", str(port), "--mode", mode, "--conns", str(conns),
            "--duration", f"{duration_s:g}", "--cookie-prefix", cookie_prefix]
    for key, value in (({"host": host} if host else {}) | (extra or {})).items():
        args += [f"--{key}", str(value)]
    return pinned(cpus, args) if net is None else net.client(pinned(cpus, args))


def run_loadgen(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run the load generator to completion; its JSON result. (Idle mode: stdin is at EOF, so it
    lets its sessions go as soon as they are all up.)"""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s + LOADGEN_GRACE_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"load generator hung: {' '.join(argv)}") from exc
    return parse_result(done.stdout, done.stderr, argv)


def parse_result(stdout: str, stderr: str, argv: list[str]) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"load generator printed no result: {' '.join(argv)}\n{stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class HeldLoad:
    """The load generator in idle mode: holds sessions until released (a context manager)."""

    def __init__(self, argv: list[str], ready_timeout_s: float) -> None:
        self.argv = argv
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HeldLoad:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        return self

    def wait_ready(self) -> dict[str, Any]:
        assert self.proc is not None
        line = _read_line(self.proc, self.ready_timeout_s)
        if not line.startswith("{"):
            raise BenchError(f"load generator never reported its sessions ready: {' '.join(self.argv)}")
        ready: dict[str, Any] = json.loads(line)
        return ready

    def release(self) -> dict[str, Any]:
        """Close its stdin (it closes every session and reports)."""
        assert self.proc is not None
        try:
            out, err = self.proc.communicate(timeout=LOADGEN_GRACE_S)  # closes stdin first
        except subprocess.TimeoutExpired as exc:
            raise BenchError("load generator did not finish after release") from exc
        return parse_result(out.decode(), err.decode(), self.argv)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc, grace_s=5.0)


def sessions_argv(binaries: Binaries, cpus: list[int], port: int, options: dict[str, Any], *,
                  host: str | None = None, net: Net | None = None) -> list[str]:
    args = [str(binaries.sessions), "--port", str(port)]
    for key, value in (({"host": host} if host else {}) | options).items():
        args += [f"--{key}", str(value)]
    return pinned(cpus, args) if net is None else net.client(pinned(cpus, args))


class SessionLoad:
    """The session-model load generator, followed through its event lines (a context manager).

    It prints {"event": "window_start"}, {"event": "window_end"} (and {"event": "drop"} before a
    storm) as it goes, then one result object; wait_event() lets the runner sample the proxy at
    those moments.
    """

    def __init__(self, argv: list[str], timeout_s: float) -> None:
        self.argv = argv
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] | None = None

    def __enter__(self) -> SessionLoad:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_event(self, name: str) -> bool:
        """True when the event came; False when the program finished (or went quiet) first."""
        assert self.proc is not None
        while self.result is None:
            line = _read_line(self.proc, self.timeout_s)
            if not line.startswith("{"):
                return False
            data = json.loads(line)
            if data.get("event") == name:
                return True
            if "event" not in data:
                self.result = data
        return False

    def finish(self) -> dict[str, Any]:
        assert self.proc is not None
        try:
            out, err = self.proc.communicate(timeout=self.timeout_s + LOADGEN_GRACE_S)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"session load generator hung: {' '.join(self.argv)}") from exc
        if self.result is not None:
            return self.result
        return parse_result(out.decode(), err.decode(), self.argv)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                stop(self.proc, grace_s=2.0)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
