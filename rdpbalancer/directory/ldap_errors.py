"""ldap3's exceptions, turned into short causes an administrator can act on.

ldap3 wraps socket and TLS errors in stringified tuples ("('socket ssl wrapping error: [SSL: ...]',)"),
and AD explains a failed bind only in a hex sub-code of the diagnostic message ("..., data 52e, ...").
"""

from __future__ import annotations

import re

from rdpbalancer.directory._ldap3 import ldap3_exceptions

_SSL_REASON = re.compile(r"\[SSL: [A-Z0-9_]+\] (.+?)\.? \(_ssl\.c:\d+\)|\[SSL: [A-Z0-9_]+\] ([^'\"(]+)")
_ERRNO_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"\])]+)")
_AD_SUBCODE = re.compile(r"\bdata ([0-9a-f]{3,8})\b", re.IGNORECASE)

# The "data XXX" of an AD bind failure (the Win32 error of the logon), as documented for
# AcceptSecurityContext failures: ERROR_LOGON_FAILURE (52e) is the plain wrong password.
AD_BIND_SUBCODES = {
    "525": "no such user",
    "52e": "",
    "530": "logon not permitted at this time",
    "531": "logon not permitted from this workstation",
    "532": "password expired",
    "533": "account disabled",
    "701": "account expired",
    "773": "the password must be changed",
    "775": "account locked out",
}

# Result codes where the server wants TLS or signing before it accepts a simple bind (RFC 4511 4.1.9).
_NEEDS_TLS = {"strongerAuthRequired", "confidentialityRequired"}


def transport_cause(exc: BaseException, timeout_s: float) -> str:
    """Why a server could not be reached or stopped answering."""
    text = str(exc)
    if match := _SSL_REASON.search(text):
        reason = (match.group(1) or match.group(2)).replace("\\", "").strip()  # ldap3 nests repr()s
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, TimeoutError | ldap3_exceptions.LDAPResponseTimeoutError) or "timed out" in text:
        return f"no answer within {timeout_s:g}s"
    if match := _ERRNO_REASON.search(text):
        return match.group(1).strip().lower()
    if "invalid server address" in text:
        return "cannot resolve the host name"
    return text or type(exc).__name__


def result_cause(exc: ldap3_exceptions.LDAPOperationResult) -> str:
    """A result code the server returned (e.g. `insufficientAccessRights`), with its diagnostic message."""
    description = str(exc.description)
    message = str(exc.message or "").strip()
    return f"{description} ({message})" if message else description


def bind_cause(exc: ldap3_exceptions.LDAPOperationResult) -> str:
    description = str(exc.description)
    if description == "invalidCredentials":
        match = _AD_SUBCODE.search(str(exc.message or ""))
        detail = AD_BIND_SUBCODES.get(match.group(1).lower(), "") if match else ""
        return f"invalid credentials ({detail})" if detail else "invalid credentials"
    if description in _NEEDS_TLS:
        return (
            f"the server refuses simple binds over an unprotected connection ({description}):"
            " use an ldaps:// URL or start_tls = true"
        )
    return result_cause(exc)
