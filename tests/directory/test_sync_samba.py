"""DirectorySync with a real Samba AD DC: refreshes, outages and restarts from the disk cache."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rdpbalancer.directory.ldap import LdapDirectory, LdapSettings
from rdpbalancer.directory.model import GroupSnapshot
from rdpbalancer.directory.sync import DirectorySync
from tests.support.samba import SambaDC

HOUR_S = 3600.0  # refresh interval: the background loop never fires during a test


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_sync(
    samba: SambaDC, ldap_settings: Callable[..., LdapSettings], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Callable[[], DirectorySync]]:
    made: list[DirectorySync] = []

    def make() -> DirectorySync:
        sync = DirectorySync(
            ldap=LdapDirectory(ldap_settings()),
            ldap_groups={name: samba.group_dn(name) for name in ("Sales", "Accounting")},
            file_groups={},
            static_groups={"Admins": frozenset({"root"})},
            cache_path=tmp_path / "state" / "groups-cache.json",
            refresh_s=HOUR_S,
            on_update=published.append,
            clock=clock,
        )
        made.append(sync)
        return sync

    published: list[GroupSnapshot] = []
    yield make
    for sync in made:
        await sync.stop()


async def test_start_fetches_transitive_membership(make_sync: Callable[[], DirectorySync], clock: FakeClock) -> None:
    sync = make_sync()
    await sync.start()
    snapshot = sync.snapshot
    assert snapshot.source == "ldap"
    assert snapshot.fetched_at == clock.now
    assert snapshot.groups_of("dave") == {"Sales"}
    assert snapshot.members("Admins") == {"root"}
    assert sync.status().last_error is None


async def test_refresh_now_sees_a_new_member_without_restart(
    samba: SambaDC, make_sync: Callable[[], DirectorySync]
) -> None:
    sync = make_sync()
    await sync.start()
    with samba.member_added("Accounting", "carol"):
        assert await sync.refresh_now()
        assert sync.snapshot.groups_of("carol") == {"Accounting", "Sales"}
    assert await sync.refresh_now()
    assert sync.snapshot.groups_of("carol") == {"Sales"}


async def test_outage_keeps_the_last_good_data_and_reports_it(
    samba: SambaDC, make_sync: Callable[[], DirectorySync], clock: FakeClock
) -> None:
    sync = make_sync()
    await sync.start()
    fetched_at = clock.now
    samba.stop()
    clock.now += 120
    assert not await sync.refresh_now()
    status = sync.status()
    assert status.last_error == f"connect to {samba.url}: connection refused"
    assert status.last_success == fetched_at
    assert status.last_attempt == clock.now
    assert status.age_s == 120
    assert sync.snapshot.members("Sales") == {"carol", "dave"}
    samba.start()
    assert await sync.refresh_now()
    assert sync.status().last_error is None
    assert sync.status().age_s == 0


async def test_restart_while_ad_is_down_routes_from_the_disk_cache(
    samba: SambaDC, make_sync: Callable[[], DirectorySync], clock: FakeClock, tmp_path: Path
) -> None:
    first = make_sync()
    await first.start()
    await first.stop()
    fetched_at = clock.now
    cache = tmp_path / "state" / "groups-cache.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert json.loads(cache.read_text())["fetched_at"] == fetched_at

    samba.stop()
    clock.now += 600
    second = make_sync()
    await second.start()
    assert second.snapshot.source == "cache"
    assert second.snapshot.groups_of("dave") == {"Sales"}
    status = second.status()
    assert status.source == "cache"
    assert status.age_s == 600
    assert status.last_success is None
    assert status.last_error == f"connect to {samba.url}: connection refused"
