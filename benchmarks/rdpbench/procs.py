"""Child processes of the benchmark: start pinned to CPUs, watch memory and CPU, stop by PID.

Every process here is one the runner started (or a descendant of one); nothing is stopped by
name. Memory and CPU are read from /proc for the process and all its descendants, so a proxy
with worker processes is measured as a whole.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 10.0  # rdpbalancer flushes its sticky table on SIGTERM; HAProxy stops at once
PORT_POLL_S = 0.005  # start-up time resolution of wait_accepting()


class BenchError(Exception):
    """A benchmark step failed; the message says which and why (with a log tail when useful)."""


def raise_nofile_limit() -> int:
    """Soft open-files limit up to the hard one (children inherit it); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pinned(cpus: Sequence[int], argv: Sequence[str]) -> list[str]:
    """argv run under `taskset -c CPUS` (inherited by the program's own children)."""
    if not cpus:
        return list(argv)
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *argv]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_accepting(port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path | None = None,
                   host: str = "127.0.0.1") -> float:
    """Seconds until host:port accepts a connection; fails if `proc` exits first."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.args} exited with {proc.returncode}{log_tail(log)}")
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.connect((host, port))
            return time.monotonic() - start
        time.sleep(PORT_POLL_S)
    raise BenchError(f"nothing accepted on port {port} within {timeout_s:.0f}s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  log " + str(log) + ":\n    " + "\n    ".join(tail) if tail else ""


# --- /proc readings ---------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of pid (children of every thread, recursively)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in _listdir(f"/proc/{parent}/task"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in Path(f"/proc/{parent}/task/{task}/children").read_text().split()]
                found.extend(kids)
                pending.extend(kids)
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def rss_kb(pid: int) -> int:
    """VmRSS of pid and its descendants, in KiB."""
    return sum(_status_kb(p, "VmRSS") for p in tree(pid))


def hwm_kb(pid: int) -> int:
    """Peak RSS (VmHWM) of pid and its descendants, in KiB."""
    return sum(_status_kb(p, "VmHWM") for p in tree(pid))


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of pid (all threads) and its live descendants."""
    return sum(_cpu_one(p) for p in tree(pid))


def _cpu_one(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def others_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by every live process outside `exclude`, by PID."""
    return {int(name): _cpu_one(int(name)) for name in _listdir("/proc")
            if name.isdigit() and int(name) not in exclude}


def others_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds other people's processes used between two others_cpu() samples: the growth of
    those alive at both, all of what those started in between used (a lower bound: a process that
    exited in between takes its time with it)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def open_sockets(pid: int) -> int:
    """Sockets open in pid and its descendants (files such as the sticky table's are not counted)."""
    count = 0
    for p in tree(pid):
        for fd in _listdir(f"/proc/{p}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{p}/fd/{fd}").startswith("socket:")
    return count


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat; busy counts irq and softirq time too, which
    /proc/PID/stat does not charge to any process (loopback TCP does much of its work there)."""
    times: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return times


def steal_ticks() -> dict[int, int]:
    """Per CPU jiffies stolen by the hypervisor so far (/proc/stat): a vCPU that was not running."""
    steal: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu" and len(values) > 7:
            steal[int(name[3:])] = int(values[7])
    return steal


def busy_pct(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: list[int]) -> float | None:
    """How busy `cpus` were between two cpu_times() readings, in % of one CPU (averaged)."""
    busy = sum(after[c][0] - before[c][0] for c in cpus)
    total = sum(after[c][1] - before[c][1] for c in cpus)
    return 100.0 * busy / total if cpus and total > 0 else None


def background_busy_pct(sample_s: float) -> float | None:
    """How busy all CPUs are over sample_s while the benchmark itself is idle: other people's work."""
    before = cpu_times()
    time.sleep(sample_s)
    after = cpu_times()
    return busy_pct(before, after, sorted(after))


# --- stopping -----------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process, SIGKILL it after grace_s; then any descendant it left behind."""
    if proc.poll() is None:
        kids = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
