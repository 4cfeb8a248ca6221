"""``[admin]``: the HTTP API, dashboard and metrics endpoint."""

from __future__ import annotations

from pathlib import Path

from pydantic import StrictBool, StrictStr, field_validator

from rdpbalancer.config.addresses import ListenAddress
from rdpbalancer.config.base import ConfigModel
from rdpbalancer.config.types import ConfigPath, ListenAddressField

# loopback: the API can drain the farm, so exposing it must be a deliberate choice
DEFAULT_ADMIN_LISTEN = ListenAddress("127.0.0.1", 9000)


class AdminSection(ConfigModel):
    enabled: StrictBool = True
    listen: ListenAddressField = DEFAULT_ADMIN_LISTEN
    unix_socket: ConfigPath | None = None  # created with mode 0600
    token_file: ConfigPath | None = None  # without it the API is read-only
    read_auth: StrictBool = False  # true: reads need the token too
    # Host names the API answers to besides localhost/127.0.0.1/[::1] while it listens on loopback
    # (e.g. a reverse proxy's name); any other Host header gets 421 (DNS rebinding).
    allowed_hosts: tuple[StrictStr, ...] = ()
    # The node's VRRP state, one word, written by keepalived's notify hook
    # (contrib/keepalived/keepalived-notify.sh): read for rdpbalancer_ha_state and the dashboard.
    ha_state_file: ConfigPath | None = None

    @field_validator("ha_state_file")
    @classmethod
    def _ha_state_file_writable_place(cls, path: Path | None) -> Path | None:
        # the file itself may not exist yet (keepalived writes it at its first state change);
        # its directory must, or the hook could never write it and the state would stay unknown
        if path is not None and path.is_dir():
            raise ValueError(f"{path} is a directory: name the file keepalived's notify hook writes "
                             "(e.g. /var/lib/rdpbalancer/ha-state)")
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"directory {path.parent} does not exist: keepalived's notify hook could "
                             "never write the state there")
        return path
