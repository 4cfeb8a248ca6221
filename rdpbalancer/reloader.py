"""Reload: re-read the configuration file and swap it in whole, or leave the running one alone.

The new file is parsed, validated and compiled beside the running configuration; what needs a
restart is refused (config/restart.py); what can fail (new listeners, the admin token, a new
directory) is prepared before anything changes, then committed. Reloads queue: SIGHUP, the API
and ctl at once each read the file in turn. systemd hears RELOADING=1 and READY=1.
`configure` puts a configuration's settings into every component, at start and each reload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from rdpbalancer import transparent
from rdpbalancer.admin.errors import AdminError
from rdpbalancer.config import ConfigError, load_config
from rdpbalancer.config.compile import Snapshot, compile_config
from rdpbalancer.config.restart import ReloadError, check_reloadable
from rdpbalancer.config.schema import Config
from rdpbalancer.config.status import ConfigStatus
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.sync import DirectorySync
from rdpbalancer.parts import Parts
from rdpbalancer.relay.listener import ListenError
from rdpbalancer.relay.splice import PipePool
from rdpbalancer.systemd import monotonic_usec, notify
from rdpbalancer.transparent import TransparentError

log = logging.getLogger("rdpbalancer")

# the old configuration stays
REFUSED = (ConfigError, ListenError, ReloadError, DirectoryError, AdminError, TransparentError)


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a reload made ready before anything changed; its commit installs it."""

    directory: DirectorySync | None = None  # a new group directory, when groups or its settings changed


class Reloader:
    def __init__(self, parts: Parts, status: ConfigStatus, serving: asyncio.Event) -> None:
        self.parts, self.status = parts, status
        self.serving = serving  # set once the balancer serves: the hosts' poller runs
        self.lock = asyncio.Lock()  # also held by a handoff: no reload while listeners change hands
        self.handed_over = False  # a handoff started: the new process serves, it is the one to reload

    def hand_over(self) -> None:
        """A handoff started: reloads are refused from now on (unless it fails: `take_back`)."""
        self.handed_over = True

    def take_back(self) -> None:
        self.handed_over = False

    async def reload(self) -> str | None:
        """None on success, else the error (the running configuration stays in force)."""
        async with self.lock:
            if self.handed_over:
                return self._failed("this process is handing over or handed over to a new one: reload that one")
            return await self._reload()

    async def _reload(self) -> str | None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")
        self.status.last_reload_at = time.time()
        try:
            config = await asyncio.to_thread(load_config, self.status.path)
            snapshot = compile_config(config)
            check_reloadable(self.parts.snapshot.config, config, self.parts.admin.port)
            prepared = await self._prepare(config, snapshot)
        except REFUSED as exc:
            return self._failed(str(exc))
        await self._commit(snapshot, prepared)
        self.status.last_reload_error = None
        self.status.reloads_ok += 1
        log.info("configuration reloaded from %s", self.status.path)
        notify("READY=1")
        return None

    async def _prepare(self, config: Config, snapshot: Snapshot) -> Prepared:
        """Everything that can fail, before anything changes (raises one of REFUSED)."""
        parts = self.parts
        if snapshot.relay.transparent - parts.snapshot.relay.transparent:  # switched on: may refuse
            await check_transparent(snapshot.relay.transparent)
        directory = parts.groups.rebuilt(parts.snapshot.config, config)
        if config.admin.enabled:
            parts.admin.reload_auth(config.admin)  # before anything changes: may refuse
        await parts.listeners.open(snapshot.listen, reuse_port=snapshot.workers > 1)
        return Prepared(directory)

    async def _commit(self, snapshot: Snapshot, prepared: Prepared) -> None:
        """Swap the new configuration in (cannot fail)."""
        parts = self.parts
        configure(parts, snapshot)
        if self.serving.is_set():  # new sources, intervals, credentials or tokens (re-read by the compile)
            await parts.hosts.restart(snapshot.sessions)
        parts.listeners.close_removed(snapshot.listen)
        if parts.workers is not None:
            await parts.workers.reconfigure()
        if prepared.directory is not None:
            await parts.groups.replace(prepared.directory)

    def _failed(self, error: str) -> str:
        self.status.last_reload_error = error
        self.status.reloads_failed += 1
        log.error("reload refused, the running configuration stays in force:\n%s", error)
        notify("READY=1")
        return error


async def check_transparent(servers: frozenset[str]) -> None:
    """Transparent servers need the capability (raises TransparentError) and routing, which is
    the admin's: what can be seen missing of it is logged, once per start or reload."""
    if not servers:
        return
    transparent.require(servers)
    for finding in await asyncio.to_thread(transparent.routing_findings):
        log.warning("transparent mode: %s", finding)


def configure(parts: Parts, snapshot: Snapshot) -> None:
    """A configuration's settings into every component (at start, and each reload)."""
    config, router, ctx = snapshot.config, parts.router, parts.ctx
    parts.ops.configure(snapshot)
    ctx.configure(snapshot.relay)
    router.table.ttl_s, router.table.max_entries = config.sticky.ttl, config.sticky.max_entries
    if router.host_sessions is not None:  # the hosts' lists keyed as the cookies are, from now on
        router.host_sessions.rekey(config.identity.strip_domain)
    parts.store.set_commit_window(config.sticky.commit_window)
    parts.monitor.update(list(snapshot.checks))
    parts.monitor.shutdown_sessions_on_down = config.health.on_down == "shutdown-sessions"
    if router.new_users is not None:
        router.new_users.per_minute = config.limits.new_users_per_source
    if snapshot.relay.splice:
        ctx.splice = ctx.splice or PipePool(processes=snapshot.relay.processes)
    else:
        ctx.splice = None  # new sessions copy; running splice sessions keep their pump
    logging.getLogger().setLevel(config.log.level.upper())
