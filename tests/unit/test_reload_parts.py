"""Reload over the composed parts (reloader.py): prepare what can fail, then commit; the group
directory is rebuilt only when its settings changed; a refused reload changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import load_config
from tests.support.balancer import farm_config

GROUP = '[groups.Admins]\nmembers = ["alice"]\n'


def _text(tmp_path: Path, *, ttl: str = "8h", groups: str = GROUP) -> str:
    return farm_config([("A", "127.0.0.1:1", 1)], tmp_path / "s.db").replace('ttl = "8h"', f'ttl = "{ttl}"') + groups


@pytest.fixture
async def reloadable(tmp_path: Path) -> AsyncIterator[tuple[Balancer, Path]]:
    path = tmp_path / "c.toml"
    path.write_text(_text(tmp_path))
    bal = Balancer(load_config(path))
    try:
        yield bal, path
    finally:
        bal.listeners.close()  # a reload opens them (the balancer was not started)
        await bal.listeners.wait_closed()
        await bal.groups.stop()


async def test_a_reload_commits_the_settings_and_keeps_an_unchanged_directory(
        reloadable: tuple[Balancer, Path], tmp_path: Path) -> None:
    bal, path = reloadable
    directory = bal.directory
    path.write_text(_text(tmp_path, ttl="2h"))
    assert await bal.reloader.reload() is None
    assert bal.table.ttl_s == 7200.0 and bal.snapshot.config.sticky.ttl == 7200.0
    assert bal.directory is directory  # groups and directory settings unchanged
    assert bal.addresses  # prepared: the listeners of the new configuration


async def test_changed_groups_get_a_new_directory(reloadable: tuple[Balancer, Path], tmp_path: Path) -> None:
    bal, path = reloadable
    directory = bal.directory
    path.write_text(_text(tmp_path, groups='[groups.Admins]\nmembers = ["alice", "bob"]\n'))
    assert await bal.reloader.reload() is None
    assert bal.directory is not directory and bal.view.directory_status().group_sizes == {"Admins": 2}


async def test_a_refused_reload_changes_nothing(reloadable: tuple[Balancer, Path]) -> None:
    bal, path = reloadable
    snapshot, directory = bal.snapshot, bal.directory
    path.write_text("[balancer]\nnot_a_key = 1\n")
    error = await bal.reloader.reload()
    assert error is not None and "not_a_key" in error
    assert bal.snapshot is snapshot and bal.directory is directory
    assert bal.reloader.status.reloads_failed == 1 and bal.reloader.status.last_reload_error == error
