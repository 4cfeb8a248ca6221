"""Push tokens differ from the admin token and from each other (SECURITY.md): a host whose push
token is the admin token would have every right of the API. Refused from real 0600 files at
start (the loader, `check-config`) and at a reload (the running configuration stays)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import ConfigError, load_config
from tests.support.balancer import farm_config

ADMIN = "admin-token-0123456789abcdef"
TOKENS = {"TS01": "ts01-push-token-0123456789", "TS02": "ts02-push-token-0123456789"}


def secret(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def write_push_tokens(tmp_path: Path, tokens: dict[str, str]) -> Path:
    return secret(tmp_path / "push.toml", "".join(f'{k} = "{v}"\n' for k, v in tokens.items()))


def write_config(tmp_path: Path, tokens: dict[str, str], admin: str = ADMIN) -> Path:
    admin_file = secret(tmp_path / "admin.token", admin + "\n")
    push = write_push_tokens(tmp_path, tokens)
    text = farm_config([("TS01", "127.0.0.1:3390", 1), ("TS02", "127.0.0.1:3391", 1)], tmp_path / "s.db",
                       extra=f'token_file = "{admin_file}"')
    text += f'[sessions]\nsource = "push"\npush_tokens = "{push}"\n'
    config = tmp_path / "rdpb.toml"
    config.write_text(text)
    return config


def test_a_push_token_equal_to_the_admin_token_is_refused_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, {**TOKENS, "TS01": ADMIN})
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert f"sessions.push_tokens: {tmp_path / 'push.toml'}: the token of TS01 is the admin token ([admin] " \
           f"token_file = {tmp_path / 'admin.token'})" in message
    assert ADMIN not in message  # the error names the keys, never the secret


def test_check_config_refuses_it_too(tmp_path: Path) -> None:
    """`rdpbalancer check-config`: what `systemctl reload` runs first."""
    config = write_config(tmp_path, {**TOKENS, "TS02": ADMIN})
    result = subprocess.run([sys.executable, "-m", "rdpbalancer", "check-config", "-c", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "the token of TS02 is the admin token" in result.stdout + result.stderr


def test_two_hosts_sharing_a_token_are_both_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"TS01": TOKENS["TS01"], "TS02": TOKENS["TS01"]})
    with pytest.raises(ConfigError, match=r"sessions\.push_tokens: .*push\.toml: TS01 and TS02 share one token"):
        load_config(config)


def test_distinct_tokens_are_taken(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, TOKENS))
    assert config.sessions.push_tokens == tmp_path / "push.toml"


async def push(bal: Balancer, server: str, token: str) -> int:
    assert bal.admin is not None
    url = f"http://127.0.0.1:{bal.admin.port}/api/v1/hosts/{server}/sessions"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.put(url, data=json.dumps({"sessions": []}),
                                                         headers=headers) as resp:
        return resp.status


async def test_a_reload_that_would_give_a_host_the_admin_token_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, TOKENS)
    bal = Balancer(load_config(config))
    bal.reloader.status.path = str(config)
    await bal.start()
    try:
        assert await push(bal, "TS01", TOKENS["TS01"]) == 200
        # the push tokens file now hands TS01 the admin token
        write_push_tokens(tmp_path, {**TOKENS, "TS01": ADMIN})
        error = await bal.reloader.reload()
        assert error is not None and "the token of TS01 is the admin token" in error
        assert bal.reloader.status.last_reload_error == error
        assert await push(bal, "TS01", TOKENS["TS01"]) == 200  # the running configuration stays
        assert await push(bal, "TS01", ADMIN) == 401
        # or the admin token is rotated to a host's push token
        write_push_tokens(tmp_path, TOKENS)
        secret(tmp_path / "admin.token", TOKENS["TS02"] + "\n")
        error = await bal.reloader.reload()
        assert error is not None and "the token of TS02 is the admin token" in error
        # and two hosts sharing one
        secret(tmp_path / "admin.token", ADMIN + "\n")
        write_push_tokens(tmp_path, {"TS01": TOKENS["TS02"], "TS02": TOKENS["TS02"]})
        error = await bal.reloader.reload()
        assert error is not None and "TS01 and TS02 share one token" in error
        write_push_tokens(tmp_path, TOKENS)
        assert await bal.reloader.reload() is None
    finally:
        await bal.stop()
