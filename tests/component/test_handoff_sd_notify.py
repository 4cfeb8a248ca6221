"""A handoff as systemd sees it (`Type=notify`, `NotifyAccess=all`, as in contrib/rdpbalancer.service
and the Debian package): the new process reports `READY=1` and `MAINPID=` itself; the old one,
leaving after its last session, says nothing more. A `STOPPING=1` from it would make systemd
stop the service, the new process with it: an upgrade would end in an outage."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from pathlib import Path

import pytest

from tests.support.balancer import BalancerProcess, farm_config, process_gone, wait_until
from tests.support.fakes import start_farm, where

WAIT_S = 20.0


async def receive(sd: socket.socket) -> str:
    return (await asyncio.to_thread(sd.recv, 4096)).decode()


@pytest.mark.processes
async def test_the_old_process_leaves_a_handoff_without_telling_systemd_the_service_stops(tmp_path: Path) -> None:
    farm = await start_farm("TS01")
    new_pid = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(tmp_path / "notify.sock"))
        sd.settimeout(WAIT_S)
        config = tmp_path / "c.toml"
        config.write_text(farm_config([("TS01", farm[0].address, 1)], tmp_path / "s.db"))
        old = BalancerProcess(config, 0, tmp_path / "b.log", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        old.start()
        try:
            assert old.proc is not None
            assert (await receive(sd)).startswith("READY=1")  # serving: SIGUSR2 is acted on now
            old.proc.send_signal(signal.SIGUSR2)
            taken_over = await receive(sd)
            found = re.search(r"(?m)^MAINPID=(\d+)$", taken_over)
            assert taken_over.startswith("READY=1") and found is not None, taken_over
            new_pid = int(found.group(1))
            assert new_pid != old.proc.pid
            assert await asyncio.to_thread(old.proc.wait, WAIT_S) == 0  # no session: it leaves at once
            old.proc = None
            sd.setblocking(False)
            with pytest.raises(BlockingIOError):  # nothing from the old process on its way out
                sd.recv(4096)
            sd.settimeout(WAIT_S)
            assert await where(old.port, "alice") == "TS01"  # the new process serves

            os.kill(new_pid, signal.SIGTERM)  # the service's own stop: the main process says so
            assert await receive(sd) == "STOPPING=1"
            await wait_until(lambda: process_gone(new_pid), WAIT_S)
        finally:
            old.stop()
            if new_pid and not process_gone(new_pid):
                os.kill(new_pid, signal.SIGKILL)
            for server in farm:
                await server.stop()
