"""The running configuration's history, as the admin API and the metrics show it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ConfigStatus:
    """What the admin API shows about the configuration."""

    path: str
    loaded_at: float
    last_reload_at: float | None = None
    last_reload_error: str | None = None
    reloads_ok: int = 0
    reloads_failed: int = 0
