"""Group files (the HAProxy ACL format) and the watcher that re-reads them only when they change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rdpbalancer.directory import files
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.files import FileGroupWatcher, parse_group_file, read_group_file

HAPROXY_FIXTURES = Path("/work/shared/fixtures/haproxy")


@pytest.mark.parametrize(
    ("name", "users"),
    [("Sales", {"carol", "dave"}), ("Accounting", {"alice", "anna"})],
)
def test_reads_the_haproxy_acl_files(name: str, users: set[str]) -> None:
    assert read_group_file(HAPROXY_FIXTURES / name) == users


def test_comments_blank_lines_whitespace_case_and_domains() -> None:
    data = b"# exported from AD\n\n  Alice  \r\nCORP\\Bob\n\t\ncarol@corp.example\n   # indented comment\nALICE\n"
    assert parse_group_file(data, "f") == {"alice", "bob", "carol"}


def test_bom_and_windows_1252() -> None:
    assert parse_group_file(b"\xef\xbb\xbfjos\xc3\xa9\nfran\xe7ois\n", "f") == {"josé", "françois"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"alice\njohn smith\n", "Sales:2: 'john smith': a user name cannot contain spaces or control characters"),
        (b"alice\tbob\n", "Sales:1: 'alice\\tbob': a user name cannot contain spaces"),
        (b"ok\n\nCORP\\\n", "Sales:3: 'CORP\\\\': no user name"),
    ],
)
def test_errors_name_file_and_line(data: bytes, message: str) -> None:
    with pytest.raises(DirectoryError) as info:
        parse_group_file(data, "Sales")
    assert str(info.value).startswith(message)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError) as info:
        read_group_file(tmp_path / "missing")
    assert str(info.value) == f"group file {tmp_path / 'missing'}: cannot read: No such file or directory"


class CountingReads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = files.read_group_file

        def counted(path: Path) -> frozenset[str]:
            self.count += 1
            return original(path)

        monkeypatch.setattr(files, "read_group_file", counted)


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_watcher_reads_only_when_the_signature_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = CountingReads(monkeypatch)
    path = tmp_path / "Sales"
    write(path, "carol\n", 1_000_000_000)
    watcher = FileGroupWatcher(path)
    assert watcher.poll() is True
    assert watcher.poll() is False
    assert (watcher.members, reads.count) == (frozenset({"carol"}), 1)

    write(path, "carol\ndave\n", 2_000_000_000)  # content and mtime change
    assert watcher.poll() is True
    assert (watcher.members, reads.count) == (frozenset({"carol", "dave"}), 2)

    # Same mtime and size (an editor saving within one clock tick), but a new inode: re-read.
    replacement = tmp_path / "Sales.new"
    write(replacement, "carol\nfred\n", 2_000_000_000)
    replacement.replace(path)
    assert watcher.poll() is True
    assert watcher.members == {"carol", "fred"}


def test_touched_but_unchanged_file_reports_no_change(tmp_path: Path) -> None:
    path = tmp_path / "Sales"
    write(path, "carol\n", 1_000_000_000)
    watcher = FileGroupWatcher(path)
    watcher.poll()
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    assert watcher.poll() is False


def test_watcher_keeps_the_last_good_content(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "Sales"
    write(path, "carol\n", 1_000_000_000)
    watcher = FileGroupWatcher(path)
    watcher.poll()

    write(path, "carol\njohn smith\n", 2_000_000_000)
    assert watcher.poll() is False
    assert watcher.members == {"carol"}
    assert watcher.error is not None and f"{path}:2:" in watcher.error
    assert "keeping the last good content (1 users)" in caplog.text

    path.unlink()
    caplog.clear()
    assert watcher.poll() is False
    assert watcher.poll() is False
    assert watcher.members == {"carol"}
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # logged once, not once per poll

    write(path, "dave\n", 3_000_000_000)
    assert watcher.poll() is True
    assert watcher.members == {"dave"}
    assert watcher.error is None


def test_a_file_missing_from_the_start_has_no_members(tmp_path: Path) -> None:
    watcher = FileGroupWatcher(tmp_path / "missing")
    assert watcher.poll() is False
    assert (watcher.members, watcher.loaded) == (frozenset(), False)
    assert watcher.error is not None
