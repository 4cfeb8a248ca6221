"""Group membership from LDAP / Active Directory, resolved transitively by the directory.

BLOCKING: ldap3's SYNC strategy; the caller runs `LdapDirectory.fetch` in a worker thread.

One fetch = one connection: connect (each URL in order until one answers), StartTLS if asked,
simple bind, then per group: check the group DN exists (a typo must not read as an empty group),
and list its users with the in-chain matching rule, which expands nested groups on the server
([MS-ADTS] 3.1.1.3.4.4.3 LDAP_MATCHING_RULE_TRANSITIVE_EVAL), in pages (RFC 2696; AD returns at
most MaxPageSize = 1000 entries per page).

Only `DirectoryError` leaves `fetch`. Its message names the URL, the bind user or group DN and the
cause; it never contains the password. An unreachable server (refused, timed out, TLS failure,
garbage) moves on to the next URL; an answer from a server (wrong password, no such group) does
not: every DC of a domain would say the same, and a wrong password retried on each DC counts
towards the account's lockout on each.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rdpbalancer.directory._ldap3 import escape_filter_chars, ldap3, ldap3_exceptions, parse_dn
from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.ldap_errors import bind_cause, result_cause, transport_cause
from rdpbalancer.directory.ldap_tls import ContextTls, tls_context
from rdpbalancer.directory.model import member_key

log = logging.getLogger("rdpbalancer.directory")

IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_TRANSITIVE_EVAL, [MS-ADTS] 3.1.1.3.4.4.3
# People only: computer accounts are users too (objectClass=user) but have objectCategory=computer.
USERS_FILTER = "(&(objectCategory=person)(objectClass=user)(memberOf:{rule}:={dn}))"
_SCHEMES = ("ldap://", "ldaps://")


@dataclass(frozen=True)
class LdapSettings:
    urls: tuple[str, ...]  # ldap:// or ldaps://, tried in this order
    bind_user: str  # UPN (svc@corp.example), DOMAIN\svc or a DN: AD takes any for a simple bind
    password: str = field(repr=False)
    base_dn: str  # where users are searched (subtree)
    start_tls: bool = False  # upgrade ldap:// URLs with StartTLS before binding
    ca_file: str | None = None  # PEM CA bundle for the server certificate (default: the system CAs)
    tls_verify: bool = True
    connect_timeout_s: float = 5
    operation_timeout_s: float = 10  # per LDAP operation (bind, each page); ldap3 wants whole seconds
    page_size: int = 500
    user_attribute: str = "sAMAccountName"


class _Unreachable(DirectoryError):
    """This server cannot be used right now: try the next URL."""


class LdapDirectory:
    def __init__(self, settings: LdapSettings) -> None:
        _check_settings(settings)
        self.settings = settings
        self._receive_timeout = max(1, math.ceil(settings.operation_timeout_s))  # ldap3 packs it as an int
        needs_tls = settings.start_tls or any(url.lower().startswith("ldaps://") for url in settings.urls)
        self._tls = ContextTls(tls_context(settings.ca_file, settings.tls_verify)) if needs_tls else None

    def fetch(self, groups: Mapping[str, str]) -> dict[str, frozenset[str]]:
        """Member user keys of each group (our name -> group DN), nested groups expanded."""
        for name, dn in groups.items():
            _check_dn(dn, f"group {name!r}")
        failures: list[str] = []
        for url in self.settings.urls:
            try:
                result = self._fetch_from(url, groups)
            except _Unreachable as exc:
                failures.append(str(exc))
                continue
            if failures:
                log.warning("LDAP: %s; used %s instead", "; ".join(failures), url)
            return result
        raise DirectoryError("; ".join(failures))

    def _fetch_from(self, url: str, groups: Mapping[str, str]) -> dict[str, frozenset[str]]:
        conn = self._connection(url)
        try:
            self._open(conn, url)
            with self._translated(f"bind as {self.settings.bind_user} to {url}", bind=True):
                conn.bind()
            return {name: self._group_members(conn, url, name, dn) for name, dn in groups.items()}
        finally:
            _close(conn)

    def _connection(self, url: str) -> Any:
        server = ldap3.Server(url, connect_timeout=self.settings.connect_timeout_s, get_info=ldap3.NONE, tls=self._tls)
        return ldap3.Connection(
            server,
            user=self.settings.bind_user,
            password=self.settings.password,
            authentication=ldap3.SIMPLE,
            client_strategy=ldap3.SYNC,
            read_only=True,
            raise_exceptions=True,  # else paged_search ends silently on an error: a group would look empty
            auto_referrals=False,  # AD refers to other partitions by DNS name: never chase them
            receive_timeout=self._receive_timeout,
        )

    def _open(self, conn: Any, url: str) -> None:
        with self._translated(f"connect to {url}", timeout_s=self.settings.connect_timeout_s):
            conn.open()
        if self.settings.start_tls and not url.lower().startswith("ldaps://"):
            with self._translated(f"StartTLS with {url}"):
                conn.start_tls()

    def _group_members(self, conn: Any, url: str, name: str, dn: str) -> frozenset[str]:
        with self._translated(f"read group {name!r} ({dn}) on {url}"):
            self._check_group(conn, url, name, dn)
            try:
                return frozenset(self._member_keys(conn, dn))
            except ldap3_exceptions.LDAPNoSuchObjectResult:
                raise DirectoryError(f"base_dn {self.settings.base_dn}: not found on {url}") from None

    @staticmethod
    def _check_group(conn: Any, url: str, name: str, dn: str) -> None:
        """A missing group must be an error: the membership filter alone would just match nobody."""
        try:
            conn.search(dn, "(objectClass=group)", ldap3.BASE, attributes=["objectClass"])
        except ldap3_exceptions.LDAPNoSuchObjectResult:
            raise DirectoryError(f"group {name!r}: {dn} not found on {url}") from None
        if not any(_entries(conn.response)):
            raise DirectoryError(f"group {name!r}: {dn} on {url} is not a group")

    def _member_keys(self, conn: Any, group_dn: str) -> Iterator[str]:
        attribute = self.settings.user_attribute
        entries = conn.extend.standard.paged_search(
            self.settings.base_dn,
            USERS_FILTER.format(rule=IN_CHAIN, dn=escape_filter_chars(group_dn)),
            ldap3.SUBTREE,
            attributes=[attribute],
            paged_size=self.settings.page_size,
            generator=True,
        )
        for entry in _entries(entries):
            values = _raw_values(entry, attribute)
            key = member_key(values[0]) if values else None
            if key is not None:
                yield key

    @contextlib.contextmanager
    def _translated(self, action: str, *, timeout_s: float | None = None, bind: bool = False) -> Iterator[None]:
        """Turn whatever ldap3 raises into DirectoryError (this server answered) or _Unreachable (try the next)."""
        timeout = self._receive_timeout if timeout_s is None else timeout_s
        try:
            yield
        except DirectoryError:
            raise
        except ldap3_exceptions.LDAPOperationResult as exc:
            raise DirectoryError(f"{action}: {bind_cause(exc) if bind else result_cause(exc)}") from None
        except (
            ldap3_exceptions.LDAPCommunicationError,
            ldap3_exceptions.LDAPResponseTimeoutError,
            ldap3_exceptions.LDAPStartTLSError,
            OSError,
        ) as exc:
            raise _Unreachable(f"{action}: {transport_cause(exc, timeout)}") from None
        except ldap3_exceptions.LDAPException as exc:
            raise DirectoryError(f"{action}: {exc}") from None
        except Exception as exc:  # ldap3's decoder raises KeyError, IndexError... on bytes that are not LDAP
            raise _Unreachable(f"{action}: not an LDAP answer ({type(exc).__name__}: {exc})") from None


def _check_settings(settings: LdapSettings) -> None:
    if not settings.urls:
        raise DirectoryError("LDAP: no URL given")
    for url in settings.urls:
        if not url.lower().startswith(_SCHEMES) or len(url) <= len("ldaps://"):
            raise DirectoryError(f"LDAP URL {url!r}: use ldap://host[:port] or ldaps://host[:port]")
    if not settings.password:  # an empty password is an anonymous bind, which AD accepts (RFC 4513 5.1.2)
        raise DirectoryError(f"LDAP bind as {settings.bind_user}: the password is empty")
    if settings.page_size < 1 or settings.connect_timeout_s <= 0 or settings.operation_timeout_s <= 0:
        raise DirectoryError("LDAP: page_size and the timeouts must be positive")
    _check_dn(settings.base_dn, "base_dn")


def _check_dn(dn: str, what: str) -> None:
    try:
        parse_dn(dn)
    except ldap3_exceptions.LDAPInvalidDnError:
        raise DirectoryError(f"{what}: {dn!r} is not a valid DN (e.g. CN=Sales,OU=Groups,DC=corp,DC=example)") from None


def _entries(responses: Any) -> Iterator[dict[str, Any]]:
    """Search result entries, without the continuation references (searchResRef) AD adds."""
    return (r for r in responses or () if r.get("type") == "searchResEntry")


def _raw_values(entry: Mapping[str, Any], attribute: str) -> list[bytes]:
    wanted = attribute.lower()
    for name, values in entry.get("raw_attributes", {}).items():
        if name.lower() == wanted:
            return list(values)
    return []


def _close(conn: Any) -> None:
    """Unbind, and close the socket ourselves: ldap3 leaves it open when connect() or a TLS handshake fails."""
    with contextlib.suppress(Exception):  # the connection may be half-open; closing must not hide the real error
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        sock.close()
