"""Where `rdpbalancer ctl` looks for the balancer: flags, then the environment, then `-c FILE`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rdpbalancer.ctl import main
from rdpbalancer.ctl.client import (
    DEFAULT_URL,
    EXIT_USAGE,
    CtlError,
    describe_error,
    normalize_url,
    resolve_target,
)

CONFIG = """\
[admin]
listen = "{listen}"
{token_line}
[[pool]]
name = "p"
servers = [{{ name = "A", address = "127.0.0.1:3389" }}]
"""


def write_config(tmp_path: Path, listen: str = "127.0.0.1:9100", token: str | None = "config-token-0123456789",
                 enabled: bool = True) -> Path:
    token_line = ""
    if token is not None:
        (tmp_path / "admin.token").write_text(token + "\n")
        token_line = 'token_file = "admin.token"'  # relative to the configuration file
    if not enabled:
        token_line += "\nenabled = false"
    path = tmp_path / "balancer.toml"
    path.write_text(CONFIG.format(listen=listen, token_line=token_line))
    return path


def token_file(tmp_path: Path, token: str = "flag-token-0123456789") -> str:
    path = tmp_path / "flag.token"
    path.write_text(f"  {token}\n")
    return str(path)


def test_nothing_given_is_the_default_url_without_token() -> None:
    target = resolve_target(None, None, None, env={})
    assert (target.url, target.token) == (DEFAULT_URL, None)


def test_config_file_gives_url_and_token(tmp_path: Path) -> None:
    target = resolve_target(None, None, str(write_config(tmp_path)), env={})
    assert (target.url, target.token) == ("http://127.0.0.1:9100", "config-token-0123456789")
    assert target.token_from == f"{tmp_path / 'balancer.toml'} [admin] token_file"


@pytest.mark.parametrize(("listen", "url"), [
    ("0.0.0.0:9100", "http://127.0.0.1:9100"),  # a wildcard is reached on loopback
    ("[::]:9100", "http://[::1]:9100"),
    ("[::1]:9100", "http://[::1]:9100"),
    ("admin.example:9100", "http://admin.example:9100"),
])
def test_config_listen_address_becomes_a_url(tmp_path: Path, listen: str, url: str) -> None:
    assert resolve_target(None, None, str(write_config(tmp_path, listen)), env={}).url == url


def test_environment_beats_the_config_file(tmp_path: Path) -> None:
    env = {"RDPBALANCER_URL": "http://127.0.0.1:9200/", "RDPBALANCER_TOKEN": " env-token-0123456789\n"}
    target = resolve_target(None, None, str(write_config(tmp_path)), env=env)
    assert (target.url, target.token, target.token_from) == ("http://127.0.0.1:9200", "env-token-0123456789",
                                                             "RDPBALANCER_TOKEN")


def test_flags_beat_the_environment(tmp_path: Path) -> None:
    env = {"RDPBALANCER_URL": "http://127.0.0.1:9200", "RDPBALANCER_TOKEN": "env-token-0123456789"}
    flag = token_file(tmp_path)
    target = resolve_target("127.0.0.1:9300", flag, str(write_config(tmp_path)), env=env)
    assert (target.url, target.token, target.token_from) == ("http://127.0.0.1:9300", "flag-token-0123456789",
                                                             f"--token-file {flag}")


def test_url_and_token_may_come_from_different_places(tmp_path: Path) -> None:
    target = resolve_target(None, None, str(write_config(tmp_path)), env={"RDPBALANCER_URL": "http://h:1"})
    assert (target.url, target.token) == ("http://h:1", "config-token-0123456789")


def test_a_losing_token_file_is_never_read(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "admin.token").unlink()  # the configuration's token file is gone
    target = resolve_target(None, None, str(config), env={"RDPBALANCER_TOKEN": "env-token-0123456789"})
    assert target.token == "env-token-0123456789"
    with pytest.raises(CtlError, match="cannot read token file") as raised:
        resolve_target(None, None, str(config), env={})
    assert raised.value.exit_code == EXIT_USAGE


def test_an_empty_token_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CtlError, match="is empty") as raised:
        resolve_target(None, token_file(tmp_path, ""), None, env={})
    assert raised.value.exit_code == EXIT_USAGE


def test_a_disabled_admin_api_is_named(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, token=None, enabled=False))
    with pytest.raises(CtlError, match=r"\[admin\] enabled = false"):
        resolve_target(None, None, config, env={})
    assert resolve_target("http://h:1", None, config, env={}).url == "http://h:1"


def test_an_invalid_config_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[admin]\nlisten = 9000\n")
    with pytest.raises(CtlError, match="invalid configuration") as raised:
        resolve_target(None, None, str(bad), env={})
    assert raised.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(("given", "url"), [
    ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),
    ("127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("https://lb.example/admin/", "https://lb.example/admin"),
    ("http://[::1]:9000", "http://[::1]:9000"),
])
def test_urls_are_normalized(given: str, url: str) -> None:
    assert normalize_url(given) == url


@pytest.mark.parametrize("given", ["ftp://127.0.0.1", "http://", "http:///x"])
def test_bad_urls_are_usage_errors(given: str) -> None:
    with pytest.raises(CtlError, match="invalid URL") as raised:
        normalize_url(given)
    assert raised.value.exit_code == EXIT_USAGE


def test_connection_errors_are_described_plainly() -> None:
    assert describe_error(ConnectionRefusedError(111, "Connection refused"), 10) == "connection refused"
    assert describe_error(TimeoutError(), 2.5) == "no answer within 2.5s"
    assert describe_error(socket.gaierror(-2, "Name or service not known"), 10) == \
        "cannot resolve the host name (Name or service not known)"


@pytest.mark.parametrize("argv", [
    ["weight", "TS01", "-1"], ["weight", "TS01", "257"], ["drain"], ["sticky"], ["sticky", "set", "alice"],
    ["--timeout", "0", "servers"], ["sticky", "import", "f.json", "--chunk", "0"], [],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "RDPBALANCER_URL" in capsys.readouterr().out
