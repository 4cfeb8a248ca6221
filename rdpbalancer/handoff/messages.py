"""What crosses a handoff's channel (rdpbalancer/ipc.py): one frozen dataclass per message."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rdpbalancer.policy.host_sessions import HostReport
from rdpbalancer.policy.model import AdminState, ServerCondition
from rdpbalancer.policy.sticky import Change

Address = tuple[str, int]


class HandoffError(Exception):
    """A handoff could not start or the new process failed before taking over."""


@dataclass(slots=True)
class RuntimeState:
    """What the old process hands over besides the sockets."""

    admin_overrides: dict[str, AdminState] = field(default_factory=dict)
    weight_overrides: dict[str, int] = field(default_factory=dict)
    conditions: dict[str, ServerCondition] = field(default_factory=dict)
    connections: Counter[str] = field(default_factory=Counter)  # server -> sessions still in the old process
    active_users: Counter[str] = field(default_factory=Counter)  # sticky key -> its sessions there
    host_reports: list[HostReport] = field(default_factory=list)  # the session directory, as it stood
    # the old process's clock offset (rdpbalancer/clock.py): the times above are on its scale
    clock_offset: float | None = None


# -- old -> new -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Listeners:
    """The inherited listening sockets: descriptor -> configured address."""

    fds: dict[int, Address]


@dataclass(frozen=True, slots=True)
class Yours:
    """The old process stopped accepting and flushed its writes: its state."""

    state: RuntimeState


@dataclass(frozen=True, slots=True)
class Opened:
    """An old session started relaying (it was still connecting when the listeners moved)."""

    server: str
    key: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Closed:
    """An old session ended."""

    server: str
    key: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Changed:
    """A change of the table the old process made (and wrote to the shared file)."""

    change: Change


# -- new -> old -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Loaded:
    """Configuration and table loaded, listeners wrapped: the old process may stop accepting."""


@dataclass(frozen=True, slots=True)
class Serving:
    """The new process accepts: the old one may let go of its spare sockets."""
