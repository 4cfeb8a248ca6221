"""Human durations such as ``"500ms"``, ``"30s"`` or ``"1h30m"``, as float seconds.

Pure standard library: the pydantic glue lives in :mod:`rdpbalancer.config.schema`, so
other parts (the ``ctl`` client, log formatting) can use these without pydantic.
"""

from __future__ import annotations

import math
import re

# Largest unit first: a duration lists its parts in this order, each at most once ("1h30m").
UNIT_SECONDS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

EXAMPLES = "500ms, 30s, 5m, 8h, 1d, 1h30m"

# "ms" before "m" and "s" so that "500ms" is not read as "500m" followed by "s".
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")  # ASCII digits: \d also matches other scripts
_UNIT_RANK = {unit: rank for rank, unit in enumerate(UNIT_SECONDS)}


def parse_duration(text: str) -> float:
    """Return the number of seconds in ``text``; raise ValueError with a readable message."""
    parts = _split(text)
    ranks = [_UNIT_RANK[unit] for _, unit in parts]
    if ranks != sorted(set(ranks)):
        raise ValueError(
            f"invalid duration {text!r}: write each unit once, largest first (e.g. 1h30m, not 30m1h)"
        )
    seconds = math.fsum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: too large")
    return seconds


def _split(text: str) -> list[tuple[str, str]]:
    """Cut ``text`` into (number, unit) parts; the parts must cover the whole text."""
    parts: list[tuple[str, str]] = []
    position = 0
    while position < len(text) or not parts:
        match = _PART.match(text, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (examples: {EXAMPLES})")
        parts.append((match[1], match[2]))
        position = match.end()
    return parts


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for display: 5400.0 -> "1h30m", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts: list[str] = []
    remainder = round(seconds * 1000)  # whole milliseconds, to avoid float crumbs
    for unit, unit_seconds in UNIT_SECONDS.items():
        unit_ms = round(unit_seconds * 1000)
        count, remainder = divmod(remainder, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
