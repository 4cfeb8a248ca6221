"""The host report format, quser's output as Microsoft documents it, and the [sessions] section."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rdpbalancer.config import ConfigError, parse_config
from rdpbalancer.config.compile import compile_config
from rdpbalancer.hosts.quser import parse_quser
from rdpbalancer.hosts.report import MAX_SESSIONS, MAX_TEXT, ReportError, parse_report
from rdpbalancer.hosts.spec import Credentials
from rdpbalancer.policy.host_sessions import HostSession, SessionState, Trust

NOW = 1_764_666_000.0
# [MS] "query user" example output (learn.microsoft.com, windows-commands/query-user), and one
# with a domain-qualified name, an idle time in days and a listener line
QUSER = """\
 USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME
>user1                 console             1  Active       none  12/2/2026 8:59 AM
 user2                 rdp-tcp#1           2  Active          5  12/2/2026 9:01 AM
 CORP\\user3                                3  Disc      1+02:03  11/30/2026 7:30 AM
 svc                                    65536  Listen
"""


def quser(text: str) -> tuple[HostSession, ...]:
    return parse_quser(text, now=NOW, max_sessions=MAX_SESSIONS, max_text=MAX_TEXT)


def test_quser_output_gives_users_states_ids_and_times() -> None:
    sessions = quser(QUSER)
    assert [(s.user, s.domain, s.state, s.id) for s in sessions] == [
        ("user1", "", SessionState.ACTIVE, "1"), ("user2", "", SessionState.ACTIVE, "2"),
        ("user3", "CORP", SessionState.DISCONNECTED, "3")]
    assert sessions[2].disconnected == NOW - ((24 + 2) * 60 + 3) * 60
    assert sessions[0].logon is not None and sessions[0].disconnected is None


def test_quser_without_users_and_garbage() -> None:
    assert quser("No User exists for *\n") == ()
    assert quser("") == ()
    with pytest.raises(ValueError, match="expected quser's header line"):
        quser("hello\n")
    with pytest.raises(ValueError, match="line 2 is not a session line"):
        quser(" USERNAME SESSIONNAME ID STATE\n what\n")


def test_a_report_in_json_with_times_in_either_form() -> None:
    body = ('{"sessions": [{"user": "alice", "domain": "CORP", "state": "disconnected", "id": 7, '
            '"logon": "2026-12-02T08:00:00Z", "disconnected": 1764666000.5, "client": "10.1.2.3"}], "deny_new": true}')
    report = parse_report("TS01", body, NOW)
    assert report.deny_new and report.at == NOW
    logon = datetime(2026, 12, 2, 8, 0, tzinfo=UTC).timestamp()
    assert report.sessions == (HostSession("alice", "CORP", SessionState.DISCONNECTED, "7", logon,
                                           1764666000.5, "10.1.2.3"),)


@pytest.mark.parametrize(("body", "message"), [
    ("[]", "(document)"), ('{"sessions": [{"user": ""}]}', "sessions.0.user"),
    ('{"sessions": "alice"}', "sessions"), ('{"sessions": [], "quser": ""}', "not both"),
    ('{"sessions": [{"user": "a", "id": [1]}]}', "sessions.0.id"),
])
def test_a_bad_report_names_its_fault(body: str, message: str) -> None:
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_report("TS01", body, NOW)


def test_a_report_too_large_is_refused_before_parsing() -> None:
    with pytest.raises(ReportError, match="at most"):
        parse_report("TS01", b" " * (1024 * 1024 + 1), NOW)


def config(tmp_path: Path, sessions: str, servers: str = "") -> str:
    return f"""
[sticky]
path = "{tmp_path / 's.db'}"
[[pool]]
name = "farm"
servers = [{servers or '{ name = "TS01", address = "127.0.0.1:3390" }, { name = "TS02", address = "127.0.0.1:3391" }'}]
{sessions}
"""


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_sessions_default_to_none_and_compile_to_no_directory(tmp_path: Path) -> None:
    snapshot = compile_config(parse_config(config(tmp_path, "")))
    assert not snapshot.sessions.enabled and snapshot.policy.session_rules == {}


def test_overrides_per_pool_and_server(tmp_path: Path) -> None:
    creds = secret(tmp_path / "c.toml", 'user = "svc-rdpb"\npassword = "s3cret!"\ndomain = "CORP"\n')
    servers = ('{ name = "TS01", address = "127.0.0.1:3390", sessions = { source = "windows", interval = "30s" } }, '
               '{ name = "TS02", address = "127.0.0.1:3391" }')
    cfg = config(tmp_path, f'[sessions]\nsource = "command"\ncommand = ["list", "{{host}}"]\ntrust = "hint"\n'
                           f'credentials = "{creds}"\n', servers)
    snapshot = compile_config(parse_config(cfg))
    ts01, ts02 = snapshot.sessions.sources
    assert (ts01.kind, ts01.interval_s, ts01.port, ts01.credentials) == (
        "windows", 30.0, 445, Credentials("svc-rdpb", "s3cret!", "CORP"))
    assert (ts02.kind, ts02.command, ts02.credentials) == ("command", ("list", "{host}"), None)
    assert snapshot.policy.session_rules["farm"].trust is Trust.HINT
    assert "s3cret!" not in repr(snapshot.sessions) and "s3cret!" not in repr(ts01)


@pytest.mark.parametrize(("sessions", "where", "message"), [
    ('[sessions]\nsource = "command"\n', "sessions", 'source = "command" needs `command`'),
    ('[sessions]\nsource = "push"\n', "sessions.push_tokens", "push their sessions"),
    ('[sessions]\nsource = "windows"\n', "sessions.credentials", "needs the service account"),
    ('[sessions]\nsource = "xrdp"\n', "sessions", "does not tell user names over sesman's port"),
    ('[sessions]\nsource = "push"\ninterval = "60s"\nstale_after = "10s"\n', "", ""),  # push: not polled
    ('[sessions]\nsource = "command"\ncommand = ["x"]\ninterval = "60s"\nstale_after = "10s"\n', "sessions",
     "stale_after (10s) is shorter than interval (60s)"),
    ('[sessions]\nsource = "rdp"\n', "sessions.source", "expected one of 'windows', 'xrdp', 'push'"),
    ('[sessions]\nsources = "push"\n', "sessions.sources", "unknown key"),
])
def test_bad_sessions_settings_name_the_key(tmp_path: Path, sessions: str, where: str, message: str) -> None:
    text = config(tmp_path, sessions)
    if "push" in sessions and "interval" in sessions:
        tokens = secret(tmp_path / "t.toml", 'TS01 = "0123456789abcdef0"\nTS02 = "0123456789abcdef1"')
        text += f'push_tokens = "{tokens}"\n'
        parse_config(text)
        return
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert where in str(info.value) and message in str(info.value)


def test_secret_files_must_be_private_and_well_formed(tmp_path: Path) -> None:
    loose = secret(tmp_path / "c.toml", 'user = "u"\npassword = "p"\n', mode=0o644)
    with pytest.raises(ConfigError, match=r"accessible by group or others \(mode 0644\); run: chmod 600"):
        parse_config(config(tmp_path, f'[sessions]\nsource = "windows"\ncredentials = "{loose}"\n'))
    tokens = secret(tmp_path / "t.toml", 'TS01 = "short"\n')
    with pytest.raises(ConfigError, match="at least 16 characters"):
        parse_config(config(tmp_path, f'[sessions]\nsource = "push"\npush_tokens = "{tokens}"\n'))
    shared = secret(tmp_path / "t2.toml", 'TS01 = "0123456789abcdef0"\nTS02 = "0123456789abcdef0"\n')
    with pytest.raises(ConfigError, match="TS01 and TS02 share one token"):
        parse_config(config(tmp_path, f'[sessions]\nsource = "push"\npush_tokens = "{shared}"\n'))
    unknown = secret(tmp_path / "t3.toml", 'TS09 = "0123456789abcdef0"\n')
    with pytest.raises(ConfigError, match="'TS09' is not a server"):
        parse_config(config(tmp_path, f'[sessions]\nsource = "push"\npush_tokens = "{unknown}"\n'))


def test_trust_is_a_pools_choice_not_a_servers(tmp_path: Path) -> None:
    servers = '{ name = "TS01", address = "127.0.0.1:3390", sessions = { trust = "hint" } }'
    with pytest.raises(ConfigError, match="trust is set for a whole pool"):
        parse_config(config(tmp_path, "", servers))
