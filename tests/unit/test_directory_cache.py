"""The on-disk copy of the last good LDAP membership: atomic, private, tolerant of corruption."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from rdpbalancer.directory.cache import load_membership, save_membership

DNS = {"Sales": "CN=Sales,OU=Groups,DC=corp,DC=example", "Accounting": "CN=Accounting,OU=Groups,DC=corp,DC=example"}
GROUPS = {"Sales": frozenset({"carol", "dave"}), "Accounting": frozenset({"alice"})}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "var" / "groups.json"  # the directory is created
    save_membership(path, GROUPS, DNS, 1234.5)
    loaded = load_membership(path, DNS)
    assert loaded is not None
    assert (loaded.fetched_at, loaded.groups) == (1234.5, GROUPS)


def test_file_is_private_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    save_membership(path, GROUPS, DNS, 1.0)
    save_membership(path, GROUPS, DNS, 2.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.json"]


def test_a_leftover_temporary_file_gets_the_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    leftover = tmp_path / f".groups.json.{os.getpid()}.tmp"
    leftover.write_text("junk")
    leftover.chmod(0o644)
    save_membership(path, GROUPS, DNS, 1.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "groups.json"
    save_membership(path, GROUPS, DNS, 1.0)
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)  # the rename step of write_atomically
    with pytest.raises(OSError, match="No space left"):
        save_membership(path, {"Sales": frozenset()}, DNS, 2.0)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.json"]


def test_missing_file_is_silent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_membership(tmp_path / "none.json", DNS) is None
    assert caplog.records == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": 1, "fetched_at": 1.0, "groups": {"Sales": {"dn": "x", "mem',  # cut short
        b"\xff\xfe\x00",
        b"[]",
        b'{"format": 99, "fetched_at": 1.0, "groups": {}}',
        b'{"format": 1, "fetched_at": "yesterday", "groups": {}}',
        b'{"format": 1, "fetched_at": true, "groups": {}}',
        b'{"format": 1, "fetched_at": 1.0, "groups": []}',
        b'{"format": 1, "fetched_at": 1.0, "groups": {"Sales": {"dn": "x", "members": "carol"}}}',
        b'{"format": 1, "fetched_at": 1.0, "groups": {"Sales": {"members": []}}}',
    ],
)
def test_corrupt_file_is_reported_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    path = tmp_path / "groups.json"
    path.write_bytes(content)
    assert load_membership(path, DNS) is None
    assert f"group cache {path} is corrupt" in caplog.text


def test_groups_whose_dn_changed_are_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "groups.json"
    save_membership(path, GROUPS, DNS, 1.0)
    configured = {"Sales": DNS["Sales"].upper(), "Accounting": "CN=Finance,OU=Groups,DC=corp,DC=example"}
    loaded = load_membership(path, configured)
    assert loaded is not None
    assert loaded.groups == {"Sales": GROUPS["Sales"]}  # DNs compare case-insensitively
    assert "no usable data for Accounting" in caplog.text


def test_document_format(tmp_path: Path) -> None:
    path = tmp_path / "groups.json"
    save_membership(path, GROUPS, DNS, 1.5)
    assert json.loads(path.read_text()) == {
        "format": 1,
        "fetched_at": 1.5,
        "groups": {
            "Sales": {"dn": DNS["Sales"], "members": ["carol", "dave"]},
            "Accounting": {"dn": DNS["Accounting"], "members": ["alice"]},
        },
    }
