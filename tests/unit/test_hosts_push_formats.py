"""What a Windows host sends: the structured list the push script builds from the Terminal
Services API (the recommended form, language-independent), and `quser`'s text from localized
hosts (German, Russian), whose header and known state words are understood; an unknown state
word is refused by name. The samples are in tests/data/hosts (README there says where each comes
from)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rdpbalancer.hosts.quser import parse_quser
from rdpbalancer.hosts.report import MAX_SESSIONS, MAX_TEXT, ReportError, parse_report
from rdpbalancer.policy.host_sessions import HostSession, SessionState

DATA = Path(__file__).resolve().parents[1] / "data" / "hosts"
SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "windows-push-sessions.ps1"
NOW = 1_764_666_000.0
ACTIVE, DISC = SessionState.ACTIVE, SessionState.DISCONNECTED


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def local(*args: int) -> float:
    return datetime(*args).astimezone().timestamp()  # type: ignore[misc]


def quser(text: str) -> tuple[HostSession, ...]:
    return parse_quser(text, now=NOW, max_sessions=MAX_SESSIONS, max_text=MAX_TEXT)


def test_the_push_scripts_structured_body_is_parsed() -> None:
    body = (DATA / "windows-push-structured.json").read_bytes()  # the UTF-8 bytes the script sends
    report = parse_report("TS01", body, NOW)
    assert not report.deny_new
    assert report.sessions == (
        HostSession("alice", "CORP", ACTIVE, "2", utc(2026, 12, 2, 7, 30)),
        HostSession("müller", "CORP", DISC, "3", utc(2026, 12, 2, 6, 58, 12), utc(2026, 12, 2, 9, 5, 40)),
        HostSession("иванов", "CORP", ACTIVE, "5", utc(2026, 12, 2, 8, 1)),
    )


def test_the_push_scripts_body_for_a_host_without_users_that_refuses_logons() -> None:
    report = parse_report("TS01", (DATA / "windows-push-structured-empty.json").read_bytes(), NOW)
    assert report.sessions == () and report.deny_new


def test_the_script_builds_the_structured_form_from_the_terminal_services_api() -> None:
    """No PowerShell runs here: what can be checked is that the script asks the API, builds the
    keys the sample has, and sends UTF-8; its header says what was and was not verified."""
    script = SCRIPT.read_text(encoding="utf-8")
    for needle in ("WTSEnumerateSessionsW", "WTSQuerySessionInformationW", "WTSFreeMemory", "WTSActive = 0",
                   "WTSDisconnected = 4", "sessions = @(", "ConvertTo-Json -Compress -Depth 4",
                   "[Text.Encoding]::UTF8.GetBytes", "charset=utf-8"):
        assert needle in script, needle
    sample = json.loads((DATA / "windows-push-structured.json").read_text(encoding="utf-8"))
    for key in ("user", "domain", "id", "state", "logon", "disconnected"):
        assert f"{key} =" in script or f"$item.{key} =" in script, key
    assert set(sample) == {"sessions", "deny_new"}
    assert "Not verified" in script and "Verified" in script


def test_german_quser_output() -> None:
    sessions = quser((DATA / "quser-de.txt").read_text(encoding="utf-8"))
    assert sessions == (
        HostSession("administrator", "", ACTIVE, "2", local(2026, 12, 2, 8, 59)),
        HostSession("müller", "CORP", DISC, "3", local(2026, 12, 2, 7, 30), NOW - 65 * 60),
    )


def test_russian_quser_output() -> None:
    sessions = quser((DATA / "quser-ru.txt").read_text(encoding="utf-8"))
    assert sessions == (
        HostSession("иванов", "", ACTIVE, "2", local(2026, 12, 2, 8, 59)),
        HostSession("petrov", "", DISC, "4", local(2026, 12, 2, 7, 30), NOW - 130 * 60),
    )


def test_localized_quser_pushed_as_a_report() -> None:
    body = json.dumps({"quser": (DATA / "quser-de.txt").read_text(encoding="utf-8"), "deny_new": False})
    assert [(s.user, s.state) for s in parse_report("TS01", body, NOW).sessions] == [
        ("administrator", ACTIVE), ("müller", DISC)]


@pytest.mark.parametrize(("state", "expected"), [
    ("Actif", ACTIVE), ("Déco", DISC), ("Activo", ACTIVE), ("Desc", DISC), ("Attivo", ACTIVE),
    ("Ativo", ACTIVE), ("AKTIV", ACTIVE), ("getr.", DISC),
])
def test_known_state_words_of_other_languages(state: str, expected: SessionState) -> None:
    (session,) = quser(f" UTILISATEUR   NOM   ID   ÉTAT\n alice  3  {state}  .  02/12/2026 08:59\n")
    assert session.state is expected


def test_an_unknown_state_word_is_refused_by_name() -> None:
    text = (DATA / "quser-de.txt").read_text(encoding="utf-8") + " bob  rdp-tcp#2  5  Verbunden  .  02.12.2026 09:00\n"
    with pytest.raises(ValueError, match=r"^line 4: unknown session state 'Verbunden' \(session 5\); known: "):
        quser(text)
    with pytest.raises(ReportError, match="quser: line 4: unknown session state 'Verbunden'"):
        parse_report("TS01", json.dumps({"quser": text}), NOW)


@pytest.mark.parametrize("first", [
    " alice  3  Aktiv  .  02.12.2026 08:59",  # a session line is not a header: it has its id
    " ADMIN  RDP-TCP#0  2  AKTIV",  # not even in upper case
    " hello",
    " NO USERS",  # two words
])
def test_a_first_line_that_is_not_a_header_is_refused(first: str) -> None:
    with pytest.raises(ValueError, match="expected quser's header line"):
        quser(first + "\n alice  3  Aktiv  .  02.12.2026 08:59\n")
