"""Parse what `quser` (`query user`) prints on a Windows session host, as Microsoft documents it:

     USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME
    >administrator         rdp-tcp#3           2  Active          .  12/2/2026 8:59 AM
     alice                                     3  Disc        1:05  12/2/2026 7:30 AM

'>' marks the session quser itself runs in. A disconnected session has no SESSIONNAME, so the
columns are found from the right of the user name: the session id is the first number followed
by a state. The logon time is in the host's locale; formats other than the common ones give no
time (never an error: the time is information, the user and state are what routing needs).
"""

from __future__ import annotations

import re
from datetime import datetime

from rdpbalancer.policy.sessions import HostSession, SessionState

_STATES = {"active": SessionState.ACTIVE, "disc": SessionState.DISCONNECTED,
           "disconnected": SessionState.DISCONNECTED}
_OTHER_STATES = {"conn", "connq", "shadow", "listen", "down", "init", "idle", "reset"}  # not a user's session
_LOGON_FORMATS = ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M")
_IDLE = re.compile(r"^(?:none|\.|(?:(\d+)\+)?(?:(\d+):)?(\d+))$", re.IGNORECASE)


def parse_quser(text: str, *, now: float) -> tuple[HostSession, ...]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ()
    if "USERNAME" not in lines[0].upper():
        if "no user exists" in text.lower():  # quser's message on a host without sessions
            return ()
        raise ValueError(f"expected quser's header line (USERNAME SESSIONNAME ID STATE ...), got {lines[0][:80]!r}")
    sessions = []
    for number, line in enumerate(lines[1:], start=2):
        session = _line(line.lstrip(" >"), now)
        if session is None:
            raise ValueError(f"line {number} is not a session line: {line[:80]!r}")
        if session is not _SKIP:
            sessions.append(session)
    return tuple(sessions)


_SKIP = HostSession("-")


def _line(line: str, now: float) -> HostSession | None:
    tokens = line.split()
    if len(tokens) < 3:
        return None
    user = tokens[0]
    for i in range(1, min(len(tokens) - 1, 3)):  # the id comes after the user and maybe a session name
        if tokens[i].isdigit() and (tokens[i + 1].lower() in _STATES or tokens[i + 1].lower() in _OTHER_STATES):
            state = _STATES.get(tokens[i + 1].lower())
            if state is None:
                return _SKIP
            rest = tokens[i + 2:]
            idle = _idle_seconds(rest[0]) if rest else None
            logon = _logon(" ".join(rest[1:])) if len(rest) > 1 else None
            disconnected = now - idle if state is SessionState.DISCONNECTED and idle is not None else None
            domain, _, name = user.rpartition("\\")
            return HostSession(name, domain, state, tokens[i], logon, disconnected)
    return None


def _idle_seconds(token: str) -> float | None:
    match = _IDLE.match(token)
    if match is None or token in (".",) or token.lower() == "none":
        return 0.0 if match is not None else None
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60)


def _logon(text: str) -> float | None:
    for fmt in _LOGON_FORMATS:
        try:
            return datetime.strptime(text, fmt).astimezone().timestamp()  # the host's local time
        except ValueError:
            continue
    return None
