"""[balancer] and [sticky]: settings HAProxy spread over frontends and backends, gathered in one place."""

from __future__ import annotations

from rdpbalancer.config.types import DEFAULT_CONNECT_TIMEOUT_S, MAX_HANDSHAKE_TIMEOUT_S
from rdpbalancer.migrate.backends import PoolDraft
from rdpbalancer.migrate.frontends import FrontendDraft, handshake_ms
from rdpbalancer.migrate.stickiness import StickTable
from rdpbalancer.migrate.toml_out import Entry, ItemsEntry, Table
from rdpbalancer.migrate.values import duration

_PER_ATTEMPT = ("HAProxy applied it to each connection attempt (`retries`, 3 by default); rdpbalancer's "
                "connect_timeout covers all attempts for one client (max_connect_attempts servers)")


def balancer_table(frontends: list[FrontendDraft], pools: list[PoolDraft]) -> Table:
    entries: list[Entry | ItemsEntry] = []
    comments = [note for frontend in frontends for note in frontend.comments]
    listen = list(dict.fromkeys(address for frontend in frontends for address in frontend.listen))
    sources = [source for frontend in frontends for source in frontend.bind_sources]
    if listen:
        entries.append(Entry("listen", listen, sources))
    else:
        comments.append("no TCP frontend with a usable bind: rdpbalancer's default listen applies")
    entries += _connect_timeout(pools, comments)
    entries += _handshake_timeout(frontends, comments)
    entries += _no_cookie(frontends, pools, comments)
    return Table("balancer", entries, comments)


def _connect_timeout(pools: list[PoolDraft], comments: list[str]) -> list[Entry]:
    found = [(pool.connect_timeout_ms, pool.haproxy_name) for pool in pools if pool.connect_timeout_ms]
    if not found:
        comments.append(f"no `timeout connect` in HAProxy (it waited without limit): rdpbalancer's default, "
                        f"{duration(DEFAULT_CONNECT_TIMEOUT_S * 1000)}, applies")
        return []
    longest = max(ms for ms, _ in found)
    notes = [f"from `timeout connect` ({', '.join(f'{name}: {duration(ms)}' for ms, name in found)}). "
             + _PER_ATTEMPT]
    if len({ms for ms, _ in found}) > 1:
        notes.append("the backends differ: the longest is kept (rdpbalancer has one value for all pools)")
    return [Entry("connect_timeout", duration(longest), notes)]


def _handshake_timeout(frontends: list[FrontendDraft], comments: list[str]) -> list[Entry]:
    delays = [f.handshake for f in frontends if f.handshake is not None]
    if not delays:
        return []
    directive = max(delays, key=handshake_ms)
    ms = handshake_ms(directive)
    where = f"`{directive.text}` (line {directive.line})"
    if not 0 < ms <= MAX_HANDSHAKE_TIMEOUT_S * 1000:
        comments.append(f"{where}: outside rdpbalancer's handshake_timeout range; its default (5s) applies")
        return []
    note = (f"from {where}: HAProxy waited up to this long for the RDP cookie, then routed the connection "
            "anyway; rdpbalancer waits this long for the whole Connection Request and closes a client that "
            "sends none (real clients send it at once)")
    return [Entry("handshake_timeout", duration(ms), [note])]


def _no_cookie(frontends: list[FrontendDraft], pools: list[PoolDraft], comments: list[str]) -> list[Entry]:
    if any(frontend.reject_without_cookie for frontend in frontends):
        return [Entry("no_cookie", "reject", ["from `tcp-request content reject if !RDP_COOKIE`"])]
    if any(pool.rules.source_fallback for pool in pools):
        return [Entry("no_cookie", "source-ip", ["from `stick on src`: clients without a cookie stick by address"])]
    if any(pool.rules.by_user for pool in pools):
        note = ("HAProxy balanced a client without an mstshash cookie (e.g. mstsc with no saved user name) "
                'without stickiness: "balance" keeps that. rdpbalancer\'s default, "source-ip", would keep such '
                "a client on one server by its address: better, unless many users share one address (NAT)")
        return [Entry("no_cookie", "balance", [note])]
    comments.append("HAProxy had no stick rules; rdpbalancer always sticks users by name, and clients without "
                    'a cookie follow no_cookie (default "source-ip")')
    return []


def sticky_table(pools: list[PoolDraft]) -> Table:
    used = {pool.rules.table for pool in pools if pool.rules.by_user or pool.rules.source_fallback}
    tables = [pool.table for pool in pools if pool.table is not None and pool.table.proxy in used]
    comments = []
    if tables:
        names = ", ".join(f"{t.proxy} (line {t.line})" for t in tables)
        comments.append(f"HAProxy kept one stick table per backend: {names}. rdpbalancer keeps one table on disk, "
                        "one entry per user (replaced when a route sends the user to another pool): users keep "
                        "their server across restarts")
    entries: list[Entry | ItemsEntry] = [*_ttl(tables, comments), *_max_entries(tables)]
    comments += _key_length_notes(tables, pools)
    return Table("sticky", entries, comments)


def _ttl(tables: list[StickTable], comments: list[str]) -> list[Entry]:
    expiring = [t for t in tables if t.expire_ms is not None]
    if len(expiring) < len(tables):
        comments.append("a table without `expire` kept entries until it was full; rdpbalancer's ttl applies")
    if not expiring:
        return []
    longest = max(t.expire_ms or 0.0 for t in expiring)
    notes = [f"from `expire` ({', '.join(f'{t.proxy}: {duration(t.expire_ms or 0.0)}' for t in expiring)}). "
             f"HAProxy counted it from the start of the user's last connection, so a session longer than that "
             "lost its entry; rdpbalancer counts from the end of the last connection and keeps an entry while "
             "its session is open"]
    if len({t.expire_ms for t in expiring}) > 1:
        notes.append("the backends differ: the longest is kept")
    return [Entry("ttl", duration(longest), notes)]


def _max_entries(tables: list[StickTable]) -> list[Entry]:
    sized = [t for t in tables if t.size > 0]
    if not sized:
        return []
    parts = ", ".join(f"{t.proxy}: {t.size}" for t in sized)
    how = "the sum of the tables' sizes" if len(sized) > 1 else "the table's size"
    note = (f"{how} ({parts}; HAProxy's k is 1024), so as many users fit as before; rdpbalancer evicts the "
            "least recently used idle entries beyond it")
    return [Entry("max_entries", sum(t.size for t in sized), [note])]


def _key_length_notes(tables: list[StickTable], pools: list[PoolDraft]) -> list[str]:
    whole_names = any(pool.rules.by_user and pool.rules.prefix is None for pool in pools)
    lengths = sorted({t.key_length for t in tables if t.key_length is not None})
    if not (whole_names and lengths):
        return []
    return [f"HAProxy cut keys to {lengths[-1]} bytes (`len`); rdpbalancer keeps whole user names"]
