"""The balancer routing departments by live AD group membership (real Samba AD DC, real sockets)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from tests.support import samba as samba_support
from tests.support.fakes import FakeRdpServer, start_farm, where

DEPARTMENTS = ("Accounting", "Marketing", "Sales")


def config_text(dc: samba_support.SambaDC, farm: dict[str, FakeRdpServer], workdir: Path,
                password: str = samba_support.USER_PASSWORD, url: str | None = None) -> str:
    secret = workdir / "ldap.secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    groups = "".join(f'[groups.{g}]\nldap = "{dc.group_dn(g)}"\n' for g in DEPARTMENTS)
    routes = "".join(f'[[route]]\ngroups = ["{g}"]\npool = "{g.lower()}"\n' for g in DEPARTMENTS)
    pools = "".join(
        f'[[pool]]\nname = "{name.lower()}"\nservers = [{{ name = "{name}", address = "{server.address}" }}]\n'
        for name, server in farm.items()
    )
    return f"""
[balancer]
listen = ["127.0.0.1:0"]
[sticky]
path = "{workdir / 'sticky.db'}"
sync = "normal"
[health]
check = "none"
[admin]
listen = "127.0.0.1:0"
[directory.ldap]
urls = ["{url or dc.url}"]
bind_user = "{samba_support.SERVICE_UPN}"
password_file = "{secret}"
base_dn = "{samba_support.BASE_DN}"
connect_timeout = "2s"
timeout = "5s"
refresh = "1h"
{groups}
{routes}
[[route]]
pool = "default"
{pools}"""


@asynccontextmanager
async def department_farm() -> AsyncIterator[dict[str, FakeRdpServer]]:
    servers = await start_farm(*DEPARTMENTS, "Default")
    try:
        yield {s.name: s for s in servers}
    finally:
        for s in servers:
            await s.stop()


@asynccontextmanager
async def balancer(text: str) -> AsyncIterator[Balancer]:
    bal = Balancer(parse_config(text))
    await bal.start()
    try:
        yield bal
    finally:
        await bal.stop()


async def test_departments_route_by_ad_group_including_nesting(samba: samba_support.SambaDC, tmp_path: Path) -> None:
    async with department_farm() as farm, balancer(config_text(samba, farm, tmp_path)) as bal:
        port = bal.addresses[0][1]
        assert await where(port, "alice") == "Accounting"
        assert await where(port, "bob") == "Marketing"
        assert await where(port, "carol") == "Sales"
        assert await where(port, "dave") == "Sales"  # through Sales-EMEA, nested in Sales
        assert await where(port, "CORP\\Dave") == "Sales"
        assert await where(port, "nobody") == "Default"
        status = bal.directory.status()
        assert status.last_error is None and status.source == "ldap"


async def test_membership_change_routes_after_refresh_without_restart(samba: samba_support.SambaDC,
                                                                     tmp_path: Path) -> None:
    async with department_farm() as farm, balancer(config_text(samba, farm, tmp_path)) as bal:
        port = bal.addresses[0][1]
        assert await where(port, "dave") == "Sales"
        with samba.member_added("Accounting", "dave"):
            assert await bal.directory.refresh_now()
            # the Accounting route comes first; dave's Sales entry belongs to another pool
            assert await where(port, "dave") == "Accounting"


async def test_samba_down_routes_from_cache_even_after_restart(samba: samba_support.SambaDC, tmp_path: Path) -> None:
    async with department_farm() as farm:
        text = config_text(samba, farm, tmp_path)
        async with balancer(text) as bal:
            port = bal.addresses[0][1]
            assert await where(port, "carol") == "Sales"
            samba.stop()
            assert not await bal.directory.refresh_now()
            assert "127.0.0.1" in (bal.directory.status().last_error or "")
            assert await where(port, "dave") == "Sales"  # last good data
        async with balancer(text) as bal:  # restart while AD is down: the disk cache
            port = bal.addresses[0][1]
            status = bal.directory.status()
            assert status.source == "cache" and status.last_error is not None
            assert await where(port, "dave") == "Sales"
            assert await where(port, "alice") == "Accounting"


async def test_wrong_password_and_unreachable_server_are_clear(samba: samba_support.SambaDC, tmp_path: Path) -> None:
    async with department_farm() as farm:
        async with balancer(config_text(samba, farm, tmp_path, password="wrong-Passw0rd")) as bal:
            error = bal.directory.status().last_error or ""
            assert "invalid credentials" in error and samba_support.SERVICE_UPN in error
            assert "wrong-Passw0rd" not in error
            assert await where(bal.addresses[0][1], "carol") == "Default"  # no data yet: default route
        second = tmp_path / "unreachable"
        second.mkdir()
        async with balancer(config_text(samba, farm, second, url="ldap://127.0.0.1:1")) as bal:
            error = bal.directory.status().last_error or ""
            assert "ldap://127.0.0.1:1" in error and "refused" in error


def test_explain_shows_dave_routed_through_nested_group(samba: samba_support.SambaDC, tmp_path: Path) -> None:
    farm = {name: FakeRdpServer(name, port=10000 + i) for i, name in enumerate((*DEPARTMENTS, "Default"))}
    cfg = tmp_path / "rdpb.toml"
    cfg.write_text(config_text(samba, farm, tmp_path))
    out = subprocess.run([sys.executable, "-m", "rdpbalancer", "explain", "-c", str(cfg), "--user", "dave",
                          "--source", "10.1.2.3"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "groups: Sales   [directory: ldap" in out.stdout
    assert "route[2]  MATCH  matched -> pool sales" in out.stdout
    assert "decision: new   pool: sales" in out.stdout
