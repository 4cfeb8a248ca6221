"""Start and stop the admin HTTP server (TCP and optionally a Unix socket)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from rdpbalancer.admin.api import LOOPBACK_HOSTS, Auth, build_app
from rdpbalancer.admin.errors import AdminError
from rdpbalancer.metrics import Metrics
from rdpbalancer.ports import OperationsPort, ReadModel
from rdpbalancer.relay.listener import ListenError

if TYPE_CHECKING:
    from rdpbalancer.config.admin import AdminSection


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AdminError(f"admin.token_file: cannot read {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminError(f"admin.token_file: {path} is accessible by group or others "
                         f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
    if len(token) < 16:
        raise AdminError(f"admin.token_file: {path}: the token must be at least 16 characters")
    return token


def host_names(section: AdminSection) -> tuple[frozenset[str], frozenset[str]]:
    """(the names a request on a loopback address may use, [admin] allowed_hosts), see `Auth`."""
    host = section.listen.host
    return LOOPBACK_HOSTS | {host.lower(), f"[{host.lower()}]"}, frozenset(h.lower() for h in section.allowed_hosts)


class _QuietBadRequests(logging.Filter):
    """aiohttp logs a malformed request (a request line over 8 KiB, a bad header) at ERROR with a
    traceback, after answering 400: one line without the traceback is enough, and a client
    sending junk must not fill the log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "admin API: malformed HTTP request refused (400): %s", (exc.message,)
        return True


logging.getLogger("aiohttp.server").addFilter(_QuietBadRequests())


class AdminServer:
    def __init__(self, view: ReadModel, ops: OperationsPort, metrics: Metrics, section: AdminSection) -> None:
        self.view, self.ops, self.metrics = view, ops, metrics
        self.section = section  # [admin] as started (a change needs a restart; tokens reload)
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.auth = Auth(None, False)

    async def start(self) -> None:
        section = self.section
        self.auth = Auth(read_token(section.token_file), section.read_auth, *host_names(section))
        self.runner = web.AppRunner(build_app(self.view, self.ops, self.metrics, self.auth), access_log=None,
                                    handle_signals=False)
        await self.runner.setup()
        try:
            site = web.TCPSite(self.runner, section.listen.host, section.listen.port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await self.stop()
            raise ListenError(f"cannot listen on {section.listen} (admin): {exc.strerror or exc}") from None
        server = cast("asyncio.Server | None", site._server)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
            host = section.listen.host  # the port taken (the config's may be 0): tests read it here
            logging.getLogger("rdpbalancer.admin").info(
                "admin API on http://%s:%d", f"[{host}]" if ":" in host else host, self.port)
        if section.unix_socket is not None:
            await self._unix(section.unix_socket)

    async def _unix(self, path: Path) -> None:
        assert self.runner is not None
        try:
            _prepare_socket_path(path)
            old = os.umask(0o177)  # created 0600: only the service user
            try:
                await web.UnixSite(self.runner, str(path)).start()
            finally:
                os.umask(old)
        except OSError as exc:  # e.g. the path is a regular file: a clear message, not a traceback
            await self.stop()
            raise ListenError(f"cannot listen on {path} (admin.unix_socket): {exc.strerror or exc}") from None

    def reload_auth(self, section: AdminSection) -> None:
        """A reload: the token file is read again (a rotated token applies at once) and
        read_auth too; raises AdminError (the reload fails, the old token stays) if unsafe."""
        token = read_token(section.token_file)
        self.auth.token, self.auth.read_auth = token, section.read_auth
        self.auth.loopback_hosts, self.auth.extra_hosts = host_names(section)
        self.section = section

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def _prepare_socket_path(path: Path) -> None:
    if path.exists() and path.is_socket():
        path.unlink()  # a stale socket from a previous run
    path.parent.mkdir(parents=True, exist_ok=True)
