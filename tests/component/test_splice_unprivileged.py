"""The splice relay's pipes for an unprivileged service user, as systemd runs it (User=rdpbalancer):
the kernel counts every pipe of the user against fs.pipe-user-pages-soft and, past it, refuses
1 MiB pipes and gives new ones 2 pages (8 KiB, 12x slower: benchmarks/pipe_sizes.py). Run as
`nobody` with setpriv, the pool must never make a pipe smaller than 64 KiB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOBODY = "65534"
PIPES = 300  # far more than the 64 pipes of 1 MiB the default soft limit (16384 pages) allows

PROBE = f"""
import fcntl, json, os
from rdpbalancer.relay.splice import F_GETPIPE_SZ, PipePool
pool = PipePool()
pipes = [pool.get() for _ in range({PIPES})]
print(json.dumps({{"uid": os.geteuid(), "budget": pool.page_budget,
                  "sizes": [fcntl.fcntl(w, F_GETPIPE_SZ) for _r, w in pipes]}}))
"""


def test_an_unprivileged_user_gets_no_8_kib_pipes() -> None:
    soft = int(Path("/proc/sys/fs/pipe-user-pages-soft").read_text())
    assert soft > 0, "this test needs the kernel's per-user pipe limit (the default: 16384 pages)"
    out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                          "-c", PROBE], capture_output=True, text=True, timeout=60, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    report = json.loads(out.stdout)
    assert report["uid"] == int(NOBODY) and report["budget"] is not None
    sizes = report["sizes"]
    assert min(sizes) >= 1 << 16, f"{sum(s < 1 << 16 for s in sizes)} pipes below 64 KiB"
    assert sizes[0] == 1 << 20  # 1 MiB while the budget lasts
