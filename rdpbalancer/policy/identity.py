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
"""

from __future__ import annotations

SOURCE_IP_PREFIX = "ip:"  # keys of clients without cookie; ':' cannot appear in an account name


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
    """The sticky key for a cookie, or None when nothing usable is left (e.g. `DOMAIN\\`)."""
    name = decode_cookie(cookie).strip()
    if strip_domain:
        name = strip_domain_part(name)
    name = name.lower()
    return name or None


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
