"""Parse what `quser` (`query user`) prints on a Windows session host, as Microsoft documents it:

     USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME
    >administrator         rdp-tcp#3           2  Active          .  12/2/2026 8:59 AM
     alice                                     3  Disc        1:05  12/2/2026 7:30 AM

'>' marks the session quser itself runs in. A disconnected session has no SESSIONNAME, so the
columns are found from the right of the user name: the session id is the first number followed
by a state. The logon time is in the host's locale; formats other than the common ones give no
time (never an error: the time is information, the user and state are what routing needs).

quser's words are translated on a localized Windows. The header is known by its shape (the
first line, upper-case words, no number), not by the word USERNAME; the state words of a few
languages are known (_STATES). An unknown state word is an error that names it: guessing would
route users by a guess. The structured form (report.py, sent by the contrib script from the
Terminal Services API) does not depend on the language and is the one to use.
"""

from __future__ import annotations

import re
from datetime import datetime

from rdpbalancer.policy.host_sessions import HostSession, SessionState

_ACTIVE, _DISC = SessionState.ACTIVE, SessionState.DISCONNECTED
_STATES = {
    "active": _ACTIVE, "disc": _DISC, "disconnected": _DISC,  # English
    "aktiv": _ACTIVE, "getr.": _DISC, "getrennt": _DISC,  # German
    "actif": _ACTIVE, "déco": _DISC, "déconnecté": _DISC,  # French
    "activo": _ACTIVE, "desc": _DISC, "desconectado": _DISC,  # Spanish
    "attivo": _ACTIVE,  # Italian ("Disc" as in English)
    "ativo": _ACTIVE,  # Portuguese ("Desc" as in Spanish)
    "активно": _ACTIVE, "диск": _DISC, "отключено": _DISC,  # Russian
}
# quser's other states (English): a session without a user at work; not evidence of a session
_OTHER_STATES = {"conn", "connq", "shadow", "listen", "down", "init", "idle", "reset"}
_LOGON_FORMATS = ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M")
_IDLE = re.compile(r"^(?:none|\.|(?:(\d+)\+)?(?:(\d+):)?(\d+))$", re.IGNORECASE)


class _LineError(ValueError):
    pass


def parse_quser(text: str, *, now: float, max_sessions: int, max_text: int) -> tuple[HostSession, ...]:
    """The user sessions quser listed; ValueError names the line. At most `max_sessions`
    sessions, and user, domain and id of at most `max_text` characters: the same bounds as the
    structured form's (report.py passes them)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ()
    if not _is_header(lines[0]):
        if "no user exists" in text.lower():  # quser's message on a host without sessions
            return ()
        raise ValueError(f"expected quser's header line (USERNAME SESSIONNAME ID STATE ..., or the same in "
                         f"the host's language), got {lines[0][:80]!r}")
    sessions: list[HostSession] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            session = _line(line.lstrip(" >"), now)
        except _LineError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if session is None:
            raise ValueError(f"line {number} is not a session line: {line[:80]!r}")
        if session is _SKIP:
            continue
        if not session.user:
            raise ValueError(f"line {number}: no user name: {line[:80]!r}")
        for field, value in (("user", session.user), ("domain", session.domain), ("id", session.id)):
            if len(value) > max_text:
                raise ValueError(f"line {number}: the {field} is {len(value)} characters; at most {max_text}")
        if len(sessions) == max_sessions:
            raise ValueError(f"line {number}: more than {max_sessions} sessions; at most {max_sessions} are taken")
        sessions.append(session)
    return tuple(sessions)


def _is_header(line: str) -> bool:
    """quser's first line in any language: several words, all in upper case, none a number
    (every session line has its numeric id; a header has the word ID)."""
    words = line.split()
    return "USERNAME" in line.upper() or (
        len(words) >= 3 and line.isupper() and not any(w.isdigit() for w in words))


_SKIP = HostSession("-")


def _line(line: str, now: float) -> HostSession | None:
    tokens = line.split()
    if len(tokens) < 3:
        return None
    user = tokens[0]
    positions = range(1, min(len(tokens) - 1, 3))  # the id comes after the user and maybe a session name
    for i in positions:
        word = tokens[i + 1].lower()
        if tokens[i].isdigit() and (word in _STATES or word in _OTHER_STATES):
            state = _STATES.get(word)
            if state is None:
                return _SKIP
            rest = tokens[i + 2:]
            idle = _idle_seconds(rest[0]) if rest else None
            logon = _logon(" ".join(rest[1:])) if len(rest) > 1 else None
            disconnected = now - idle if state is SessionState.DISCONNECTED and idle is not None else None
            domain, _, name = user.rpartition("\\")
            return HostSession(name, domain, state, tokens[i], logon, disconnected)
    for i in positions:  # an id followed by a word: a state of a language not known here
        if tokens[i].isdigit() and any(c.isalpha() for c in tokens[i + 1]):
            raise _LineError(f"unknown session state {tokens[i + 1]!r} (session {tokens[i]}); known: "
                             f"{', '.join(sorted(_STATES))}; send the structured form instead (see "
                             "contrib/windows-push-sessions.ps1)")
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
