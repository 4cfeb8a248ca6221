"""DirectorySync with a fake LDAP directory, a fake clock and a fake sleep: no waiting on real time."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from rdpbalancer.directory.cache import load_membership, save_membership
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.model import GroupSnapshot
from rdpbalancer.directory.sync import DirectorySync

DNS = {"Sales": "CN=Sales,OU=Groups,DC=corp,DC=example"}
SALES = frozenset({"carol", "dave"})
REFRESH_S = 300.0
RETRY_S = 30.0
FILE_CHECK_S = 2.0


class FakeLdap:
    """Stands in for LdapDirectory: returns `data`, or raises `error`; records the thread it ran in."""

    def __init__(self, data: Mapping[str, frozenset[str]]) -> None:
        self.data = dict(data)
        self.error: Exception | None = None
        self.calls = 0
        self.threads: set[int] = set()

    def fetch(self, groups: Mapping[str, str]) -> dict[str, frozenset[str]]:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.error is not None:
            raise self.error
        return {name: self.data.get(name, frozenset()) for name in groups}


class FakeTime:
    """A clock that moves only when told to, and a sleep that ends only when the clock passes its deadline."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        sleeper = (self.now + delay, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        try:
            await sleeper[1]
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    async def advance(self, seconds: float, *, sleepers: int = 1) -> None:
        """Once `sleepers` tasks are asleep: move the clock, wake those now due, wait until they sleep again."""
        await wait_until(lambda: len(self._sleepers) >= sleepers)
        self.now += seconds
        due = [s for s in self._sleepers if s[0] <= self.now]
        for sleeper in due:
            self._sleepers.remove(sleeper)
            sleeper[1].set_result(None)
        await wait_until(lambda: len(self._sleepers) >= sleepers)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def ldap() -> FakeLdap:
    return FakeLdap({"Sales": SALES})


@pytest.fixture
def published() -> list[GroupSnapshot]:
    return []


@pytest.fixture
async def make_sync(
    ldap: FakeLdap, fake_time: FakeTime, published: list[GroupSnapshot], tmp_path: Path
) -> AsyncIterator[Callable[..., DirectorySync]]:
    made: list[DirectorySync] = []

    def make(**overrides: Any) -> DirectorySync:
        values: dict[str, Any] = {
            "ldap": ldap,
            "ldap_groups": DNS,
            "file_groups": {},
            "static_groups": {"Admins": frozenset({"root"})},
            "cache_path": tmp_path / "cache.json",
            "refresh_s": REFRESH_S,
            "on_update": published.append,
            "clock": fake_time.clock,
            "retry_s": RETRY_S,
            "file_check_s": FILE_CHECK_S,
            "sleep": fake_time.sleep,
        }
        values.update(overrides)
        made.append(DirectorySync(**values))
        return made[-1]

    yield make
    for sync in made:
        await sync.stop()


def write(path: Path, text: str, mtime_s: int) -> None:
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))


async def test_start_publishes_the_cache_then_fresh_data(
    make_sync: Callable[..., DirectorySync], published: list[GroupSnapshot], fake_time: FakeTime, tmp_path: Path
) -> None:
    save_membership(tmp_path / "cache.json", {"Sales": frozenset({"carol"})}, DNS, fake_time.now - 900)
    sync = make_sync()
    await sync.start()
    assert [(s.source, s.members("Sales")) for s in published] == [("cache", {"carol"}), ("ldap", SALES)]
    assert sync.snapshot.fetched_at == fake_time.now
    assert sync.snapshot.members("Admins") == {"root"}


async def test_ldap_runs_in_a_worker_thread(make_sync: Callable[..., DirectorySync], ldap: FakeLdap) -> None:
    await make_sync().start()
    assert ldap.threads and threading.get_ident() not in ldap.threads


async def test_start_with_ad_down_routes_from_the_cache(
    make_sync: Callable[..., DirectorySync], ldap: FakeLdap, fake_time: FakeTime, tmp_path: Path
) -> None:
    save_membership(tmp_path / "cache.json", {"Sales": SALES}, DNS, fake_time.now - 900)
    ldap.error = DirectoryError("connect to ldap://dc1: connection refused")
    sync = make_sync()
    await sync.start()
    assert sync.snapshot.source == "cache"
    assert sync.snapshot.groups_of("dave") == {"Sales"}
    status = sync.status()
    assert (status.source, status.age_s, status.last_success) == ("cache", 900, None)
    assert (status.last_error, status.last_attempt) == ("connect to ldap://dc1: connection refused", fake_time.now)


async def test_start_with_ad_down_and_no_cache(make_sync: Callable[..., DirectorySync], ldap: FakeLdap) -> None:
    ldap.error = DirectoryError("connect to ldap://dc1: connection refused")
    sync = make_sync()
    await sync.start()
    status = sync.status()
    assert (status.source, status.age_s, status.group_sizes) == ("none", None, {"Admins": 1})
    assert sync.snapshot.groups_of("dave") == frozenset()


async def test_a_failed_refresh_keeps_the_last_good_data(
    make_sync: Callable[..., DirectorySync], ldap: FakeLdap, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    sync = make_sync()
    await sync.start()
    fetched_at = fake_time.now
    ldap.error = DirectoryError("bind as svc to ldap://dc1: invalid credentials")
    fake_time.now += 42
    assert await sync.refresh_now() is False
    assert sync.snapshot.members("Sales") == SALES
    status = sync.status()
    assert (status.last_success, status.last_attempt, status.age_s) == (fetched_at, fake_time.now, 42)
    assert status.last_error == "bind as svc to ldap://dc1: invalid credentials"
    assert "keeping the ldap data fetched 42s ago" in caplog.text

    ldap.error = None
    ldap.data["Sales"] = frozenset({"carol"})
    assert await sync.refresh_now() is True
    assert sync.snapshot.members("Sales") == {"carol"}
    assert (sync.status().last_error, sync.status().age_s) == (None, 0)


async def test_an_unexpected_error_is_kept_in_the_status(
    make_sync: Callable[..., DirectorySync], ldap: FakeLdap, caplog: pytest.LogCaptureFixture
) -> None:
    ldap.error = RuntimeError("boom")
    sync = make_sync()
    await sync.start()
    assert sync.status().last_error == "unexpected error: RuntimeError('boom')"
    assert "Traceback" in caplog.text


async def test_the_loop_refreshes_every_refresh_s(
    make_sync: Callable[..., DirectorySync], ldap: FakeLdap, fake_time: FakeTime
) -> None:
    await make_sync().start()
    assert ldap.calls == 1
    await fake_time.advance(REFRESH_S - 1)
    assert ldap.calls == 1
    await fake_time.advance(1)
    assert ldap.calls == 2
    await fake_time.advance(REFRESH_S)
    assert ldap.calls == 3


async def test_after_a_failure_the_loop_retries_sooner(
    make_sync: Callable[..., DirectorySync], ldap: FakeLdap, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    ldap.error = DirectoryError("connect to ldap://dc1: connection refused")
    sync = make_sync()
    await sync.start()
    await fake_time.advance(RETRY_S)
    assert ldap.calls == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # the same outage: warned once
    ldap.error = None
    await fake_time.advance(RETRY_S)
    assert (ldap.calls, sync.snapshot.source) == (3, "ldap")
    await fake_time.advance(RETRY_S)
    assert ldap.calls == 3  # back to refresh_s once it works


async def test_refresh_now_resets_the_schedule(
    make_sync: Callable[..., DirectorySync], ldap: FakeLdap, fake_time: FakeTime
) -> None:
    sync = make_sync(file_groups={})
    await sync.start()
    await fake_time.advance(REFRESH_S / 2)  # nothing due: the loop is still asleep
    assert await sync.refresh_now()
    assert ldap.calls == 2
    await fake_time.advance(REFRESH_S / 2)  # the loop wakes as planned, but nothing is due yet
    assert ldap.calls == 2
    await fake_time.advance(REFRESH_S / 2)  # refresh_s after refresh_now()
    assert ldap.calls == 3


async def test_file_groups_are_rechecked_every_few_seconds(
    make_sync: Callable[..., DirectorySync], fake_time: FakeTime, published: list[GroupSnapshot], tmp_path: Path
) -> None:
    path = tmp_path / "Marketing"
    write(path, "bob\n", 1_000)
    sync = make_sync(ldap=None, ldap_groups={}, file_groups={"Marketing": path})
    await sync.start()
    assert sync.snapshot.source == "files"
    assert sync.snapshot.members("Marketing") == {"bob"}

    write(path, "bob\nerin\n", 2_000)
    await fake_time.advance(FILE_CHECK_S)
    assert sync.snapshot.members("Marketing") == {"bob", "erin"}
    count = len(published)
    await fake_time.advance(FILE_CHECK_S)
    assert len(published) == count  # unchanged file: nothing published


async def test_a_broken_file_keeps_its_last_content_and_shows_in_the_status(
    make_sync: Callable[..., DirectorySync], fake_time: FakeTime, tmp_path: Path
) -> None:
    path = tmp_path / "Marketing"
    write(path, "bob\n", 1_000)
    sync = make_sync(file_groups={"Marketing": path})
    await sync.start()
    write(path, "bob\nerin smith\n", 2_000)
    await fake_time.advance(FILE_CHECK_S)
    assert sync.snapshot.members("Marketing") == {"bob"}
    assert sync.status().file_errors["Marketing"].startswith(f"{path}:2: 'erin smith'")


async def test_refresh_now_rechecks_the_files(make_sync: Callable[..., DirectorySync], tmp_path: Path) -> None:
    path = tmp_path / "Marketing"
    write(path, "bob\n", 1_000)
    sync = make_sync(file_groups={"Marketing": path})
    await sync.start()
    write(path, "erin\n", 2_000)
    assert await sync.refresh_now()
    assert sync.snapshot.members("Marketing") == {"erin"}


async def test_the_cache_is_written_after_a_fetch(
    make_sync: Callable[..., DirectorySync], fake_time: FakeTime, tmp_path: Path
) -> None:
    await make_sync().start()
    cached = load_membership(tmp_path / "cache.json", DNS)
    assert cached is not None
    assert (cached.fetched_at, cached.groups) == (fake_time.now, {"Sales": SALES})
    assert stat.S_IMODE((tmp_path / "cache.json").stat().st_mode) == 0o600


async def test_a_cache_that_cannot_be_written_is_logged(
    make_sync: Callable[..., DirectorySync], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sync = make_sync(cache_path=tmp_path)  # a directory: the rename fails
    await sync.start()
    assert sync.snapshot.source == "ldap"
    assert sync.status().last_error is None
    assert f"group cache {tmp_path}: cannot write" in caplog.text
    assert [r.levelno for r in caplog.records if "cannot write" in r.message] == [logging.ERROR]


async def test_stop_ends_the_loop(make_sync: Callable[..., DirectorySync], ldap: FakeLdap, fake_time: FakeTime) -> None:
    sync = make_sync()
    await sync.start()
    await sync.stop()
    await fake_time.advance(REFRESH_S * 3, sleepers=0)
    assert ldap.calls == 1


async def test_static_groups_only(make_sync: Callable[..., DirectorySync], published: list[GroupSnapshot]) -> None:
    sync = make_sync(ldap=None, ldap_groups={}, cache_path=None)
    await sync.start()
    assert [s.source for s in published] == ["static"]
    assert sync.snapshot.groups == {"Admins": {"root"}}
    assert await sync.refresh_now()


def test_invalid_sources_are_rejected(make_sync: Callable[..., DirectorySync], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without an LdapDirectory"):
        make_sync(ldap=None)
    with pytest.raises(ValueError, match="more than one source: Sales"):
        make_sync(static_groups={"Sales": frozenset()})
