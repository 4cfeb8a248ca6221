"""Reload: re-read the configuration file and swap it in whole, or leave the running one alone.

The new file is parsed, validated and compiled beside the running configuration; what needs a
restart is refused (config/restart.py); the target prepares what can fail (new listeners, the
admin token, a new directory) before anything changes, then commits. Reloads queue: SIGHUP, the
API and ctl at once each read the file in turn. systemd hears RELOADING=1 and READY=1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from rdpbalancer.admin.errors import AdminError
from rdpbalancer.config import ConfigError, load_config
from rdpbalancer.config.compile import Snapshot, compile_config
from rdpbalancer.config.restart import ReloadError, check_reloadable
from rdpbalancer.config.schema import Config
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.sync import DirectorySync
from rdpbalancer.relay.listener import ListenError
from rdpbalancer.systemd import monotonic_usec, notify

log = logging.getLogger("rdpbalancer")

REFUSED = (ConfigError, ListenError, ReloadError, DirectoryError, AdminError)  # the old configuration stays


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a reload made ready before anything changed; its commit installs it."""

    directory: DirectorySync | None = None  # a new group directory, when groups or its settings changed


class ReloadTarget(Protocol):
    """The running balancer as a reload sees it."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def admin_port(self) -> int | None: ...

    @property
    def handed_over(self) -> bool:
        """A handoff started: the new process serves, it is the one to reload."""
        ...

    async def prepare(self, config: Config, snapshot: Snapshot) -> Prepared:
        """Everything that can fail, before anything changes (raises one of REFUSED)."""
        ...

    async def commit(self, snapshot: Snapshot, prepared: Prepared) -> None:
        """Swap the new configuration in (cannot fail)."""
        ...


class Reloader:
    def __init__(self, target: ReloadTarget, path: str) -> None:
        self.target = target
        self.status = ConfigStatus(path, time.time())
        self.lock = asyncio.Lock()  # also held by a handoff: no reload while listeners change hands

    async def reload(self) -> str | None:
        """None on success, else the error (the running configuration stays in force)."""
        async with self.lock:
            if self.target.handed_over:
                return self._failed("this process is handing over or handed over to a new one: reload that one")
            return await self._reload()

    async def _reload(self) -> str | None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")
        self.status.last_reload_at = time.time()
        try:
            config = await asyncio.to_thread(load_config, self.status.path)
            snapshot = compile_config(config)
            check_reloadable(self.target.snapshot.config, config, self.target.admin_port)
            prepared = await self.target.prepare(config, snapshot)
        except REFUSED as exc:
            return self._failed(str(exc))
        await self.target.commit(snapshot, prepared)
        self.status.last_reload_error = None
        self.status.reloads_ok += 1
        log.info("configuration reloaded from %s", self.status.path)
        notify("READY=1")
        return None

    def _failed(self, error: str) -> str:
        self.status.last_reload_error = error
        self.status.reloads_failed += 1
        log.error("reload refused, the running configuration stays in force:\n%s", error)
        notify("READY=1")
        return error
