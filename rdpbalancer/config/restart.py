"""Which configuration changes a reload cannot apply: they need a restart (or a handoff)."""

from __future__ import annotations

from rdpbalancer.config.schema import Config


class ReloadError(Exception):
    """A change that needs a restart rather than a reload; the message names it."""


def check_reloadable(old: Config, new: Config, admin_port: int | None) -> None:
    """Raises ReloadError for the first change of `new` that a running process cannot take.
    `admin_port`: the port the admin API got (its listen may say port 0)."""
    if old.sticky.path != new.sticky.path:
        raise ReloadError(f"sticky.path changed ({old.sticky.path} -> {new.sticky.path}): restart to move the table")
    if old.balancer.workers != new.balancer.workers:
        raise ReloadError(f"balancer.workers changed ({old.balancer.workers} -> {new.balancer.workers}): "
                          "restart to apply it")
    if (old.sticky.store, old.sticky.redis) != (new.sticky.store, new.sticky.redis):
        raise ReloadError("sticky.store or [sticky.redis] changed: restart to apply it")
    if old.sticky.sync != new.sticky.sync:
        raise ReloadError("sticky.sync changed: restart to apply it")
    _check_admin(old, new, admin_port)


def _check_admin(old: Config, new: Config, bound_port: int | None) -> None:
    o, n = old.admin, new.admin
    # port 0 in the running file, and the port it got in the new one: the same listener
    same_listen = n.listen == o.listen or (o.listen.port == 0 and n.listen.host == o.listen.host
                                           and n.listen.port == bound_port)
    if (o.enabled, o.unix_socket) != (n.enabled, n.unix_socket) or not same_listen:
        raise ReloadError("admin.enabled, admin.listen or admin.unix_socket changed: restart to apply it "
                          "(token_file and read_auth apply on reload)")
