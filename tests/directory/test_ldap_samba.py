"""LdapDirectory against a real Samba AD DC: transitive membership, paging, TLS, and its errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rdpbalancer.directory._ldap3 import ldap3
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.ldap import LdapDirectory, LdapSettings
from tests.support import samba as dc
from tests.support.samba import SambaDC

Settings = Callable[..., LdapSettings]

EXPECTED = {
    "Accounting": {"alice"},
    "Marketing": {"bob", "josé"},  # "José" in AD: keys are lower-cased like cookies
    "Sales": {"carol", "dave"},  # dave through Sales-EMEA
    "Sales-EMEA": {"dave"},
    "Staff": {"alice", "bob", "carol", "dave"},  # not DC1$: a computer account is no person
    "Empty": set(),
}


def all_groups(samba: SambaDC) -> dict[str, str]:
    return {name: samba.group_dn(name) for name in dc.GROUPS}


@pytest.fixture
def search_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The search base of every ldap3 search request sent (one per page)."""
    calls: list[str] = []
    original = ldap3.Connection.search

    def spy(self: Any, search_base: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(search_base)
        return original(self, search_base, *args, **kwargs)

    monkeypatch.setattr(ldap3.Connection, "search", spy)
    yield calls


def test_every_group_has_its_members(samba: SambaDC, ldap_settings: Settings) -> None:
    got = LdapDirectory(ldap_settings()).fetch(all_groups(samba))
    assert {name: set(members) for name, members in got.items()} == EXPECTED


def test_nested_membership_is_resolved_by_the_server(samba: SambaDC, ldap_settings: Settings) -> None:
    got = LdapDirectory(ldap_settings()).fetch({"Sales": samba.group_dn("Sales")})
    assert "dave" in got["Sales"]  # member of Sales-EMEA only, which is a member of Sales


@pytest.mark.parametrize("page_size", [1, 2, 500])
def test_paged_search_returns_every_member(
    samba: SambaDC, ldap_settings: Settings, search_calls: list[str], page_size: int
) -> None:
    got = LdapDirectory(ldap_settings(page_size=page_size)).fetch({"Staff": samba.group_dn("Staff")})
    assert got == {"Staff": frozenset({"alice", "bob", "carol", "dave"})}
    pages = search_calls.count(dc.BASE_DN)
    assert pages == (4 // page_size + 1 if page_size < 4 else 1)  # the last page comes back empty


def test_user_attribute_is_configurable(samba: SambaDC, ldap_settings: Settings) -> None:
    directory = LdapDirectory(ldap_settings(user_attribute="userPrincipalName"))
    assert directory.fetch({"Sales": samba.group_dn("Sales")}) == {"Sales": frozenset({"carol", "dave"})}


def test_a_membership_change_is_seen_on_the_next_fetch(samba: SambaDC, ldap_settings: Settings) -> None:
    directory = LdapDirectory(ldap_settings())
    groups = {"Accounting": samba.group_dn("Accounting")}
    with samba.member_added("Accounting", "bob"):
        assert directory.fetch(groups) == {"Accounting": frozenset({"alice", "bob"})}
    assert directory.fetch(groups) == {"Accounting": frozenset({"alice"})}


def test_wrong_password_names_user_url_and_cause_but_not_the_password(
    samba: SambaDC, ldap_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Wr0ng-Secret-xyz"
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(password=secret)).fetch(all_groups(samba))
    assert str(info.value) == f"bind as {dc.SERVICE_UPN} to {samba.url}: invalid credentials"
    assert secret not in caplog.text
    assert secret not in repr(ldap_settings(password=secret))


def test_wrong_password_is_not_retried_on_the_next_url(samba: SambaDC, ldap_settings: Settings) -> None:
    # Each DC would count the failure towards the account's lockout.
    settings = ldap_settings(password="Wr0ng-Secret-xyz", urls=(samba.url, samba.ldaps_url), tls_verify=False)
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(settings).fetch(all_groups(samba))
    assert str(info.value) == f"bind as {dc.SERVICE_UPN} to {samba.url}: invalid credentials"


def test_unreachable_url_gives_a_clear_error(ldap_settings: Settings) -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(urls=("ldap://127.0.0.1:1",))).fetch({})
    assert str(info.value) == "connect to ldap://127.0.0.1:1: connection refused"


def test_the_next_url_is_used_when_the_first_is_down(
    samba: SambaDC, ldap_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    directory = LdapDirectory(ldap_settings(urls=("ldap://127.0.0.1:1", samba.url)))
    assert directory.fetch({"Sales": samba.group_dn("Sales")}) == {"Sales": frozenset({"carol", "dave"})}
    assert "connect to ldap://127.0.0.1:1: connection refused; used ldap://127.0.0.1 instead" in caplog.text


def test_every_url_down_names_each_failure(ldap_settings: Settings) -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(urls=("ldap://127.0.0.1:1", "ldap://127.0.0.1:2"))).fetch({})
    assert str(info.value) == (
        "connect to ldap://127.0.0.1:1: connection refused; connect to ldap://127.0.0.1:2: connection refused"
    )


def test_missing_group_is_an_error_naming_its_dn(samba: SambaDC, ldap_settings: Settings) -> None:
    missing = f"CN=Sales-APAC,{dc.GROUPS_OU}"
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings()).fetch({"Sales": samba.group_dn("Sales"), "APAC": missing})
    assert str(info.value) == f"group 'APAC': {missing} not found on {samba.url}"


def test_a_dn_that_is_not_a_group_is_an_error(samba: SambaDC, ldap_settings: Settings) -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings()).fetch({"Oops": samba.user_dn("alice")})
    assert str(info.value) == f"group 'Oops': {samba.user_dn('alice')} on {samba.url} is not a group"


def test_missing_base_dn_is_an_error_naming_it(samba: SambaDC, ldap_settings: Settings) -> None:
    base = f"OU=Nowhere,{dc.BASE_DN}"
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(base_dn=base)).fetch({"Sales": samba.group_dn("Sales")})
    assert str(info.value) == f"base_dn {base}: not found on {samba.url}"


def test_ldaps_verified_with_the_ca_file(samba: SambaDC, ldap_settings: Settings) -> None:
    settings = ldap_settings(urls=(samba.ldaps_url,), ca_file=str(samba.ca_file))
    assert LdapDirectory(settings).fetch({"Sales": samba.group_dn("Sales")}) == {"Sales": frozenset({"carol", "dave"})}


def test_ldaps_without_verification(samba: SambaDC, ldap_settings: Settings) -> None:
    settings = ldap_settings(urls=(samba.ldaps_url,), tls_verify=False)
    assert LdapDirectory(settings).fetch({"Sales": samba.group_dn("Sales")}) == {"Sales": frozenset({"carol", "dave"})}


def test_ldaps_with_an_unknown_ca_fails_verification(samba: SambaDC, ldap_settings: Settings) -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(urls=(samba.ldaps_url,))).fetch({})  # the system CAs do not know ours
    assert str(info.value).startswith(f"connect to {samba.ldaps_url}: TLS handshake failed: certificate verify failed")


def test_ldaps_checks_the_host_name(samba: SambaDC, ldap_settings: Settings) -> None:
    url = "ldaps://[::1]"  # the same samba, but the certificate names 127.0.0.1 and localhost only
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(urls=(url,), ca_file=str(samba.ca_file))).fetch({})
    assert str(info.value).startswith(f"connect to {url}: TLS handshake failed: certificate verify failed")
    assert "mismatch" in str(info.value)


def test_start_tls_verified_with_the_ca_file(samba: SambaDC, ldap_settings: Settings) -> None:
    settings = ldap_settings(start_tls=True, ca_file=str(samba.ca_file))
    assert LdapDirectory(settings).fetch({"Sales": samba.group_dn("Sales")}) == {"Sales": frozenset({"carol", "dave"})}


def test_start_tls_with_an_unknown_ca_fails(samba: SambaDC, ldap_settings: Settings) -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(ldap_settings(start_tls=True)).fetch({})
    assert str(info.value).startswith(f"StartTLS with {samba.url}: TLS handshake failed: certificate verify failed")
