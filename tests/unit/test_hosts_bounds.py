"""A `{"quser": ...}` report has the bounds of the structured form: at most MAX_SESSIONS sessions,
user, domain and id of at most MAX_TEXT characters; the refusal names the line and the field."""

from __future__ import annotations

import json

import pytest

from rdpbalancer.hosts.report import MAX_REPORT_BYTES, MAX_SESSIONS, MAX_TEXT, ReportError, parse_report

NOW = 1_764_666_000.0
HEADER = " USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME\n"


def quser_body(lines: list[str]) -> str:
    return json.dumps({"quser": HEADER + "".join(lines)})


def session_lines(count: int) -> list[str]:
    return [f" u{n}  {n + 2}  Disc  1:05  12/2/2026 7:30 AM\n" for n in range(count)]


def test_as_many_quser_sessions_as_the_structured_form_takes() -> None:
    body = quser_body(session_lines(MAX_SESSIONS))
    assert len(body) <= MAX_REPORT_BYTES
    assert len(parse_report("TS01", body, NOW).sessions) == MAX_SESSIONS


def test_one_quser_session_more_is_refused_naming_the_line() -> None:
    body = quser_body(session_lines(MAX_SESSIONS + 1))
    with pytest.raises(ReportError, match=rf"^quser: line {MAX_SESSIONS + 2}: more than {MAX_SESSIONS} sessions"):
        parse_report("TS01", body, NOW)


def test_the_structured_form_refuses_the_same_count() -> None:
    body = json.dumps({"sessions": [{"user": f"u{n}"} for n in range(MAX_SESSIONS + 1)]})
    with pytest.raises(ReportError, match="sessions"):
        parse_report("TS01", body, NOW)


@pytest.mark.parametrize(("line", "field"), [
    (f" {'a' * 2000}  rdp-tcp#1  2  Active  .  12/2/2026 8:59 AM\n", "user"),
    (f" {'D' * 2000}\\alice  3  Disc  1:05  12/2/2026 7:30 AM\n", "domain"),
    (f" alice  {'7' * 2000}  Active  .  12/2/2026 8:59 AM\n", "id"),
], ids=["user", "domain", "id"])
def test_a_quser_field_longer_than_the_structured_form_allows_is_refused(line: str, field: str) -> None:
    body = quser_body([" bob  2  Active  .  12/2/2026 8:59 AM\n", line])
    with pytest.raises(ReportError, match=rf"^quser: line 3: the {field} is 2000 characters; at most {MAX_TEXT}$"):
        parse_report("TS01", body, NOW)


def test_fields_at_the_limit_are_taken() -> None:
    user, domain = "a" * MAX_TEXT, "D" * MAX_TEXT
    body = quser_body([f" {domain}\\{user}  2  Active  .  12/2/2026 8:59 AM\n"])
    (session,) = parse_report("TS01", body, NOW).sessions
    assert (session.user, session.domain) == (user, domain)


def test_a_quser_line_without_a_user_name_is_refused() -> None:
    with pytest.raises(ReportError, match="line 2: no user name"):
        parse_report("TS01", quser_body([" CORP\\  2  Active  .  12/2/2026 8:59 AM\n"]), NOW)
