"""``[[route]]`` and ``[groups.NAME]``: who goes to which pool."""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from typing import Annotated, Self

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictStr, field_validator, model_validator

from rdpbalancer.config.base import ConfigModel
from rdpbalancer.config.types import ConfigPath, ListenAddressField, Name
from rdpbalancer.policy.identity import not_an_account_name


def _account_names(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """User names as a cookie can carry them: one that is no account name could never match."""
    for name in names or ():
        why = not_an_account_name(name)
        if why is not None:
            raise ValueError(f"{name!r}: {why}")
    return names


AccountNames = Annotated[tuple[StrictStr, ...] | None, AfterValidator(_account_names)]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")


def _network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError('expected a network string such as "10.1.0.0/16" or "2001:db8::/32"')
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid network {value!r}: {exc}") from None


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]


def _days(value: object) -> tuple[int, ...]:
    """["mon-fri", "sun"] -> (0, 1, 2, 3, 4, 6); ranges may wrap ("fri-mon")."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError('expected a list of days such as ["mon-fri"] or ["sat", "sun"]')
    out: set[int] = set()
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"invalid day {item!r}: use mon tue wed thu fri sat sun, or a range mon-fri")
        first, _, last = item.lower().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"invalid day {item!r}: use mon tue wed thu fri sat sun, or a range mon-fri")
        start, end = DAYS.index(first), DAYS.index(last or first)
        out.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    return tuple(sorted(out))


def _minutes(text: str) -> int:
    if not _CLOCK.fullmatch(text):
        raise ValueError(f"invalid time {text!r}: use HH:MM from 00:00 to 24:00")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _hours(value: object) -> tuple[int, int]:
    """ "08:00-18:00" -> (480, 1080) minutes; "22:00-06:00" wraps past midnight."""
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError('expected a window such as "08:00-18:00" (may cross midnight: "22:00-06:00")')
    start, end = (_minutes(part.strip()) for part in value.split("-"))
    if start == end:
        raise ValueError(f"empty window {value!r}: start and end are equal (use 00:00-24:00 for all day)")
    return start, end


class TimeWindow(ConfigModel):
    """``time = { days = ["mon-fri"], hours = "08:00-18:00", timezone = "Europe/Paris" }``.

    A window that crosses midnight belongs to the day it starts on: with days = ["fri"] and
    hours = "22:00-06:00", Saturday 03:00 matches and Friday 03:00 does not.
    """

    days: Annotated[tuple[int, ...], BeforeValidator(_days)] = tuple(range(7))
    hours: Annotated[tuple[int, int], BeforeValidator(_hours)] = (0, 24 * 60)
    timezone: StrictStr = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. \"Europe/Paris\", \"UTC\")") from None
        return value


class RouteConfig(ConfigModel):
    """``[[route]]``: conditions (all optional, all must hold) and one action."""

    name: Name | None = None
    users: AccountNames = None
    groups: tuple[StrictStr, ...] | None = None
    sources: tuple[Network, ...] | None = None
    time: TimeWindow | None = None
    collection: StrictStr | None = None
    listener: ListenAddressField | None = None
    pool: Name | None = None
    deny: StrictBool = False

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if self.deny and self.pool is not None:
            raise ValueError("a route either sends to a pool or denies: not both (remove pool or deny)")
        if not self.deny and self.pool is None:
            raise ValueError('a route needs an action: pool = "NAME" or deny = true')
        for key in ("users", "groups", "sources"):
            if getattr(self, key) == ():
                raise ValueError(f"{key} = [] can never match: remove the key, or list at least one")
        return self

    @property
    def unconditional(self) -> bool:
        keys = ("users", "groups", "sources", "time", "collection", "listener")
        return all(getattr(self, key) is None for key in keys)


class GroupConfig(ConfigModel):
    """``[groups.NAME]`` with exactly one of ``members``, ``file`` or ``ldap``."""

    members: AccountNames = None
    file: ConfigPath | None = None
    ldap: StrictStr | None = Field(default=None, min_length=3)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        given = [k for k in ("members", "file", "ldap") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a group needs exactly one of members = [...], file = \"path\" or ldap = \"CN=...\""
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self
