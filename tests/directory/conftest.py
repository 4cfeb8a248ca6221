"""Fixtures for the directory tests: one real Samba AD DC on 127.0.0.1 per session (tests/support/samba.py).

Fixtures:
    samba_dc       the session's DC (support.samba.SambaDC), whatever its state
    samba          the same DC, started again first if an earlier test stopped it
    ldap_settings  ``ldap_settings(**overrides) -> LdapSettings`` binding as the service account

A missing samba or a failed provisioning makes the tests ERROR/FAIL, never skip.
RDPB_SAMBA_FRESH=1 provisions a new domain instead of copying the cached template;
RDPB_SAMBA_KEEP=1 keeps the session's directory (smb.conf, samba.out, the test CA).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rdpbalancer.directory.ldap import LdapSettings
from tests.support import samba as samba_support

_setup: list[samba_support.SambaDC] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for dc in _setup:
        terminalreporter.write_line(f"Samba AD DC ({dc.template}) ready in {dc.setup_seconds:.2f}s")


def _enter_or_fail(stack: contextlib.ExitStack) -> samba_support.SambaDC:
    fresh = os.environ.get("RDPB_SAMBA_FRESH") == "1"
    cache_root = None if fresh else samba_support.default_cache_root()
    keep = os.environ.get("RDPB_SAMBA_KEEP") == "1"
    try:
        return stack.enter_context(samba_support.samba_dc(cache_root, keep=keep))
    except samba_support.SambaError as exc:
        message = f"Samba AD DC could not be set up: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


@pytest.fixture(scope="session")
def samba_dc() -> Iterator[samba_support.SambaDC]:
    with contextlib.ExitStack() as stack:
        dc = _enter_or_fail(stack)
        _setup.append(dc)
        yield dc


@pytest.fixture
def samba(samba_dc: samba_support.SambaDC) -> samba_support.SambaDC:
    samba_dc.ensure_running_or_restart()
    return samba_dc


@pytest.fixture
def ldap_settings(samba: samba_support.SambaDC) -> Callable[..., LdapSettings]:
    def make(**overrides: Any) -> LdapSettings:
        values: dict[str, Any] = {
            "urls": (samba.url,),
            "bind_user": samba_support.SERVICE_UPN,
            "password": samba_support.USER_PASSWORD,
            "base_dn": samba_support.BASE_DN,
            "operation_timeout_s": 5,
            "connect_timeout_s": 2,
        }
        values.update(overrides)
        return LdapSettings(**values)

    return make
