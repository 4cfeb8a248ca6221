"""LdapDirectory without a server: settings checks, and how ldap3's errors are put into words."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from rdpbalancer.directory._ldap3 import ldap3_exceptions
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.ldap import LdapDirectory, LdapSettings
from rdpbalancer.directory.ldap_errors import bind_cause, transport_cause
from rdpbalancer.directory.ldap_tls import tls_context

PASSWORD = "Sup3r-Secret"


def settings(**overrides: object) -> LdapSettings:
    values: dict[str, object] = {
        "urls": ("ldap://dc1.corp.example",),
        "bind_user": "svc@corp.example",
        "password": PASSWORD,
        "base_dn": "DC=corp,DC=example",
    }
    values.update(overrides)
    return LdapSettings(**values)  # type: ignore[arg-type]


def test_the_password_is_not_in_the_repr() -> None:
    assert PASSWORD not in repr(settings())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"urls": ()}, "LDAP: no URL given"),
        ({"urls": ("http://dc1",)}, "LDAP URL 'http://dc1': use ldap://host[:port] or ldaps://host[:port]"),
        ({"urls": ("ldaps://",)}, "LDAP URL 'ldaps://': use ldap://host[:port] or ldaps://host[:port]"),
        ({"password": ""}, "LDAP bind as svc@corp.example: the password is empty"),
        ({"page_size": 0}, "LDAP: page_size and the timeouts must be positive"),
        ({"base_dn": "corp.example"}, "base_dn: 'corp.example' is not a valid DN"),
        ({"urls": ("ldaps://dc1",), "ca_file": "/nonexistent/ca.pem"}, "ca_file /nonexistent/ca.pem: cannot load"),
    ],
)
def test_bad_settings_are_refused_at_construction(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(settings(**overrides))
    assert str(info.value).startswith(message)
    assert PASSWORD not in str(info.value)


def test_a_group_dn_that_is_not_a_dn_fails_before_connecting() -> None:
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(settings(urls=("ldap://127.0.0.1:1",))).fetch({"Sales": "Sales"})
    assert str(info.value).startswith("group 'Sales': 'Sales' is not a valid DN")


def test_a_ca_file_that_is_not_pem_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(DirectoryError, match=f"ca_file {bad}: cannot load CA certificates"):
        tls_context(str(bad), verify=True)


def test_verification_can_be_turned_off() -> None:
    context = tls_context(None, verify=False)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    context = tls_context(None, verify=True)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def result(description: str, message: str, code: int = 49) -> ldap3_exceptions.LDAPOperationResult:
    return ldap3_exceptions.LDAPOperationResult(result=code, description=description, message=message)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            result(
                "invalidCredentials",
                "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1",
            ),
            "invalid credentials",
        ),
        (
            result(
                "invalidCredentials",
                "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839",
            ),
            "invalid credentials (account locked out)",
        ),
        (result("invalidCredentials", "... data 532, ..."), "invalid credentials (password expired)"),
        (result("invalidCredentials", ""), "invalid credentials"),
        (
            result("strongerAuthRequired", "00002028: LdapErr: DSID-0C090259", 8),
            "the server refuses simple binds over an unprotected connection (strongerAuthRequired):"
            " use an ldaps:// URL or start_tls = true",
        ),
        (result("unwillingToPerform", "no anonymous", 53), "unwillingToPerform (no anonymous)"),
    ],
)
def test_bind_causes(exc: ldap3_exceptions.LDAPOperationResult, cause: str) -> None:
    assert bind_cause(exc) == cause


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            ldap3_exceptions.LDAPSocketOpenError(
                "socket connection error while opening: [Errno 111] Connection refused"
            ),
            "connection refused",
        ),
        (
            ldap3_exceptions.LDAPSocketOpenError(
                "(\"('socket ssl wrapping error: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                "IP address mismatch, certificate is not valid for \\\\'::1\\\\'. (_ssl.c:1006)',)\",)"
            ),
            "TLS handshake failed: certificate verify failed: IP address mismatch, certificate is not valid for '::1'",
        ),
        (
            ldap3_exceptions.LDAPSocketOpenError(
                "('socket ssl wrapping error: [SSL: WRONG_VERSION_NUMBER] wrong version',)"
            ),
            "TLS handshake failed: wrong version",
        ),
        (ldap3_exceptions.LDAPSocketReceiveError("error receiving data: timed out"), "no answer within 10s"),
        (TimeoutError(), "no answer within 10s"),
        (ldap3_exceptions.LDAPSocketOpenError("invalid server address"), "cannot resolve the host name"),
        (
            ldap3_exceptions.LDAPSessionTerminatedByServerError("session terminated by server"),
            "session terminated by server",
        ),
    ],
)
def test_transport_causes(exc: BaseException, cause: str) -> None:
    assert transport_cause(exc, 10) == cause
