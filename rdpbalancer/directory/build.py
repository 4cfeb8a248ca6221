"""Build a DirectorySync from the configuration (the mapping from pydantic config to adapters)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rdpbalancer.config.directory import LdapSection
from rdpbalancer.config.schema import Config
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.ldap import LdapDirectory, LdapSettings
from rdpbalancer.directory.model import GroupSnapshot, member_keys
from rdpbalancer.directory.sync import DirectoryStatus, DirectorySync
from rdpbalancer.policy.engine import Router

GROUPS_CACHE_NAME = "groups-cache.json"


class Groups:
    """The running group directory, feeding the router's membership. A reload that changes the
    groups or their sources builds a new one beside it (which may fail) and swaps it in."""

    def __init__(self, config: Config, router: Router) -> None:
        self.router = router
        self.current = build_directory(config, self._updated)

    def rebuilt(self, old: Config, new: Config) -> DirectorySync | None:
        """A new DirectorySync when groups or the directory changed, else None (keep the old)."""
        if (old.groups, old.directory, old.sticky.path) == (new.groups, new.directory, new.sticky.path):
            return None
        return build_directory(new, self._updated)

    async def replace(self, new: DirectorySync) -> None:
        await self.current.stop()
        self.current = new
        await new.start()

    async def start(self) -> None:
        await self.current.start()

    async def stop(self) -> None:
        await self.current.stop()

    def status(self) -> DirectoryStatus:
        return self.current.status()

    def _updated(self, snapshot: GroupSnapshot) -> None:
        self.router.membership = snapshot


def build_directory(config: Config, on_update: Callable[[GroupSnapshot], None]) -> DirectorySync:
    """Raises DirectoryError (e.g. an unreadable password file) naming what is wrong."""
    section = config.directory.ldap
    ldap_groups = {n: g.ldap for n, g in config.groups.items() if g.ldap is not None}
    return DirectorySync(
        ldap=LdapDirectory(_settings(section)) if section is not None and ldap_groups else None,
        ldap_groups=ldap_groups,
        file_groups={n: g.file for n, g in config.groups.items() if g.file is not None},
        static_groups={n: member_keys(g.members) for n, g in config.groups.items() if g.members is not None},
        cache_path=cache_path(config),
        refresh_s=section.refresh if section is not None else 300.0,
        on_update=on_update,
    )


def cache_path(config: Config) -> Path | None:
    section = config.directory.ldap
    if section is None:
        return None
    return section.cache_path or config.sticky.path.parent / GROUPS_CACHE_NAME


def _settings(section: LdapSection) -> LdapSettings:
    return LdapSettings(
        urls=section.urls,
        bind_user=section.bind_user,
        password=_password(section),
        base_dn=section.base_dn,
        start_tls=section.start_tls,
        ca_file=str(section.ca_file) if section.ca_file else None,
        tls_verify=section.tls_verify,
        connect_timeout_s=section.connect_timeout,
        operation_timeout_s=section.timeout,
        page_size=section.page_size,
        user_attribute=section.user_attribute,
    )


def _password(section: LdapSection) -> str:
    if section.password_env is not None:
        value = os.environ.get(section.password_env)
        if not value:
            raise DirectoryError(f"directory.ldap.password_env: environment variable {section.password_env} is not set")
        return value
    assert section.password_file is not None
    try:
        # one line; a trailing newline (echo secret > file) is not part of the password
        return section.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise DirectoryError(f"directory.ldap.password_file: cannot read {section.password_file}: "
                             f"{exc.strerror or exc}") from None
