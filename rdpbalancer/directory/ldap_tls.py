"""TLS for LDAP: an `ssl.SSLContext` built once, and the ldap3 hook that uses it.

Why not ldap3's own `Tls(validate=CERT_REQUIRED)`: ldap3 2.9.1 checks the host name itself with
`ssl.match_hostname`, deprecated since Python 3.7 (a DeprecationWarning on every handshake) and
removed in 3.12. Here the `ssl` module does the whole check, IP-address SANs included.
"""

from __future__ import annotations

import ssl
from typing import Any

from rdpbalancer.directory._ldap3 import ldap3
from rdpbalancer.directory.errors import DirectoryError


def tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """Verify the server against `ca_file` (else the system CAs), or not at all when `verify` is off."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise DirectoryError(f"ca_file {ca_file}: cannot load CA certificates: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ContextTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type information
    """An ldap3 `Tls` that wraps sockets with a ready-made SSLContext, SNI and host name check included."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=context.verify_mode)
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        # Called by ldap3 for ldaps:// right after connect, and by start_tls() after the extended op.
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )
