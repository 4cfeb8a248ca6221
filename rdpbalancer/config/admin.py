"""``[admin]``: the HTTP API, dashboard and metrics endpoint."""

from __future__ import annotations

from pydantic import StrictBool, StrictStr

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
