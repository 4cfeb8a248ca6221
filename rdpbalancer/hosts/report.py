"""The one document format a host's session list arrives in: pushed to the admin API, printed by
a `command` source, or by the contrib scripts. Validated by pydantic in one place; every error
names the field. Two shapes:

    {"sessions": [{"user": "alice", "domain": "CORP", "state": "disconnected", "id": "3",
                   "logon": "2026-12-02T08:59:00Z", "disconnected": 1764666000,
                   "client": "10.1.2.3"}, ...],
     "deny_new": false}

    {"quser": "<the text `quser` printed>", "deny_new": false}

The first is the one to use; the Windows push script sends it, read from the Terminal Services
API (contrib/windows-push-sessions.ps1), so it does not depend on the host's language. The
second is for compatibility: `quser`'s text, parsed here (quser.py), reliably in English only
(the state words of a few other languages are known). Both have the same bounds: MAX_SESSIONS
sessions, MAX_TEXT characters in a user, domain or id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError, field_validator

from rdpbalancer.hosts.quser import parse_quser
from rdpbalancer.policy.host_sessions import HostReport, HostSession, SessionState

MAX_REPORT_BYTES = 1024 * 1024  # a host with 10,000 sessions fits in a third of this
MAX_SESSIONS = 10_000
MAX_TEXT = 256

Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]


class ReportError(ValueError):
    """The document is not a session list; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionIn(_Model):
    user: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT)]
    domain: Text = ""
    state: Literal["active", "disconnected"] = "active"
    id: Text | int = ""
    logon: float | datetime | None = None
    disconnected: float | datetime | None = None
    client: Text | None = None

    @field_validator("logon", "disconnected")
    @classmethod
    def _aware(cls, value: float | datetime | None) -> float | datetime | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("a time needs its zone, e.g. 2026-12-02T08:59:00Z")
        return value


class ReportIn(_Model):
    sessions: Annotated[tuple[SessionIn, ...], Field(max_length=MAX_SESSIONS)] | None = None
    quser: Annotated[StrictStr, Field(max_length=MAX_REPORT_BYTES)] | None = None
    deny_new: StrictBool = False


def _seconds(value: float | datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else value


def parse_report(server: str, body: bytes | str, at: float) -> HostReport:
    """A host's document as a HostReport received at `at` (wall clock); ReportError names the fault."""
    if len(body) > MAX_REPORT_BYTES:
        raise ReportError(f"the session list is {len(body)} bytes; at most {MAX_REPORT_BYTES} are taken")
    try:
        doc = ReportIn.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ReportError(f"{where}: {first['msg']}") from None
    if (doc.sessions is None) == (doc.quser is None):
        raise ReportError('give either "sessions" (a list) or "quser" (the text quser printed), not both or neither')
    if doc.quser is not None:
        try:
            sessions = parse_quser(doc.quser, now=at, max_sessions=MAX_SESSIONS, max_text=MAX_TEXT)
        except ValueError as exc:
            raise ReportError(f"quser: {exc}") from None
    else:
        assert doc.sessions is not None
        sessions = tuple(HostSession(s.user, s.domain, SessionState(s.state), str(s.id), _seconds(s.logon),
                                     _seconds(s.disconnected), s.client) for s in doc.sessions)
    return HostReport(server, sessions, at=at, deny_new=doc.deny_new)
