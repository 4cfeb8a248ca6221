"""``[health]`` and its per-pool / per-server overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt

from rdpbalancer.config.base import ConfigModel
from rdpbalancer.config.types import DurationOrNever, PositiveDuration

CheckKind = Literal["rdp", "tcp", "none"]

DEFAULT_CHECK_INTERVAL_S = 3.0  # HAProxy's `inter` in the setup we replace; detection in ~9 s with fall 3
DEFAULT_CHECK_TIMEOUT_S = 2.0  # a LAN RDP stack answers a Connection Request in milliseconds
# A server must be down this long before its sticky users are moved to another one: a network
# blip or a reboot-less service restart is over in well under a minute, and moving a user
# strands their still-running session (unsaved work). Long enough for a blip, short enough
# that a user who retries after a real crash is only refused for a minute.
DEFAULT_FAILOVER_AFTER_S = 60.0
MAX_RISE_FALL = 100


class HealthSection(ConfigModel):
    """``[health]``: how servers are checked, and what happens to users of a down server."""

    check: CheckKind = "rdp"
    interval: PositiveDuration = DEFAULT_CHECK_INTERVAL_S
    timeout: PositiveDuration = DEFAULT_CHECK_TIMEOUT_S
    rise: StrictInt = Field(default=2, ge=1, le=MAX_RISE_FALL)
    fall: StrictInt = Field(default=3, ge=1, le=MAX_RISE_FALL)
    failover_after: DurationOrNever = DEFAULT_FAILOVER_AFTER_S
    on_down: Literal["keep-sessions", "shutdown-sessions"] = "keep-sessions"


class HealthOverride(ConfigModel):
    """``health = { ... }`` on a pool: any of the check settings, for that pool's servers."""

    check: CheckKind | None = None
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    rise: StrictInt | None = Field(default=None, ge=1, le=MAX_RISE_FALL)
    fall: StrictInt | None = Field(default=None, ge=1, le=MAX_RISE_FALL)
