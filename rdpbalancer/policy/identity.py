"""From the cookie a client sends to the key its sticky entry is stored under.

The `mstshash` cookie is a hint the client sends in clear before any authentication
([MS-RDPBCGR] 2.2.1.1): FreeRDP sends the /u: name in UTF-8 (up to 255 bytes), mstsc sends the
login name in the client's ANSI code page. The key must be deterministic for the same person
whatever the client, so:

1. bytes are decoded as UTF-8 when they are valid UTF-8, else as Windows-1252 (the ANSI code
   page of Western Windows installs), bytes undefined there falling back to Latin-1. A byte
   string is always decodable, so no cookie can fail here.
2. `DOMAIN\\user` and `user@domain` are reduced to `user` when `strip_domain` is set (the
   default): FreeRDP already strips `DOMAIN\\` itself but keeps UPNs whole, and mstsc sends
   either. The price is a collision: `CORP\\bob` and `LAB\\bob` share one sticky entry.
3. the result is lower-cased, since Windows account names are case-insensitive.
4. a name that cannot be an account name gives no key: one with ':' (invalid in Windows and
   Linux account names alike) or a control character. So user keys never contain ':', and the
   keys of clients without a cookie, "ip:ADDRESS", can never be reached by a cookie or an admin
   request naming a user: the two key spaces are disjoint by this rule, not by the prefix alone.
"""

from __future__ import annotations

import ipaddress

SOURCE_IP_PREFIX = "ip:"  # keys of clients without cookie: ':' is in no user key (rule 4)
NOT_IN_ACCOUNT_NAMES = ":"
# ASCII control characters (NUL...US, DEL) and lone surrogates (a JSON "\ud800"). C1 controls stay:
# they are what the undefined cp1252 bytes of an mstsc cookie decode to (rule 1).
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F)) | frozenset(chr(c) for c in range(0xD800, 0xE000))


def decode_cookie(cookie: bytes) -> str:
    try:
        return cookie.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(_decode_ansi_byte(b) for b in cookie)


def _decode_ansi_byte(b: int) -> str:
    raw = bytes((b,))
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined in cp1252
        return raw.decode("latin-1")


def user_key(cookie: bytes, *, strip_domain: bool = True) -> str | None:
    """The sticky key for a cookie, or None when nothing usable is left (e.g. `DOMAIN\\`) or
    what is left is not an account name (rule 4): such a client counts as one without cookie."""
    return name_key(decode_cookie(cookie), strip_domain=strip_domain)


def name_key(name: str, *, strip_domain: bool = True) -> str | None:
    """`user_key` of a name given as text (configuration, admin API)."""
    name = name.strip()
    if strip_domain:
        name = strip_domain_part(name)
    name = name.lower()
    return name if name and not_an_account_name(name) is None else None


def not_an_account_name(name: str) -> str | None:
    """Why `name` cannot be an account name, or None when it can."""
    if any(c in NOT_IN_ACCOUNT_NAMES for c in name):
        return "':' is not allowed in an account name"
    if any(c in _CONTROL for c in name):
        return "control characters are not allowed in an account name"
    return None


def admin_key(text: str, *, strip_domain: bool = True) -> str:
    """The key an operator means: "ip:ADDRESS" for a client without cookie, else a user name.
    Raises ValueError saying what is wrong."""
    if text.startswith(SOURCE_IP_PREFIX):
        try:
            return source_ip_key(str(ipaddress.ip_address(text[len(SOURCE_IP_PREFIX):])))
        except ValueError:
            raise ValueError(f"{printable(text)!r}: an entry of a client without cookie is written "
                             "ip:ADDRESS, with an IPv4 or IPv6 address") from None
    why = not_an_account_name(text)
    if why is not None:
        raise ValueError(f"{printable(text)!r} is not a user name: {why}")
    key = name_key(text, strip_domain=strip_domain)
    if key is None:
        raise ValueError("empty user name")
    return key


def is_source_key(key: str) -> bool:
    return key.startswith(SOURCE_IP_PREFIX)


def strip_domain_part(name: str) -> str:
    if "\\" in name:
        name = name.rsplit("\\", 1)[1]
    if "@" in name:
        name = name.split("@", 1)[0]
    return name


def source_ip_key(client_host: str) -> str:
    return SOURCE_IP_PREFIX + client_host


def printable(key: str) -> str:
    """A form of a key that is safe on one log line (no control characters, no quotes)."""
    return key.encode("unicode_escape").decode("ascii").replace('"', '\\"')
