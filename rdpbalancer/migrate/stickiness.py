"""``stick-table`` and ``stick on``: HAProxy's per-backend tables, rdpbalancer's one table.

HAProxy stores, per table, only the first criterion a request yields, and matches with the first
rule that finds an entry (configuration.txt, "stick store-request" and "stick match"). So with
``stick on rdp_cookie(mstshash),bytes(0,6)`` above ``stick on rdp_cookie(mstshash)``, only the
6-character prefix was ever stored, and the second line never mattered. rdpbalancer keys its single
table on the whole user name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdpbalancer.migrate.acls import COOKIE_FETCH
from rdpbalancer.migrate.haproxy_cfg import Directive, reading
from rdpbalancer.migrate.ledger import Ledger
from rdpbalancer.migrate.proxies import Proxy
from rdpbalancer.migrate.values import parse_int, parse_size, parse_time_ms

_TABLE_ARGUMENTS = frozenset({"type", "len", "size", "expire", "peers", "store", "srvkey", "write-to"})
_TABLE_PART_REASONS = {
    "peers": "rdpbalancer shares its sticky table between nodes through the redis store instead of peers",
    "nopurge": "rdpbalancer evicts the least recently used idle entries when the table is full",
    "store": "stick-table counters have no equivalent",
    "write-to": "no equivalent",
}


@dataclass(frozen=True, slots=True)
class StickTable:
    """A backend's ``stick-table``: ``expire`` (None: never) and ``size`` in entries."""

    proxy: str
    line: int
    text: str
    expire_ms: float | None
    size: int
    key_length: int | None


@dataclass(slots=True)
class StickRules:
    """What a backend stuck on, in rdpbalancer's terms, with notes for the pool's comments."""

    table: str
    by_user: bool = False
    prefix: int | None = None  # bytes(0,N): users sharing their first N characters shared a server
    source_fallback: bool = False  # a later "stick on src" stuck clients without a cookie by address
    notes: list[str] = field(default_factory=list)


def read_table(proxy: Proxy, ledger: Ledger) -> StickTable | None:
    directives = proxy.own("stick-table")
    if not directives:
        return None
    directive = directives[-1]
    ledger.use(directive)
    settings: dict[str, str] = {}
    words = directive.words[1:]
    index = 0
    while index < len(words):
        word = words[index]
        takes_argument = word in _TABLE_ARGUMENTS and index + 1 < len(words)
        if takes_argument:
            settings[word] = words[index + 1]
        if word in _TABLE_PART_REASONS:
            shown = " ".join(words[index : index + 1 + takes_argument])
            ledger.skip(directive, _TABLE_PART_REASONS[word], part=shown)
        index += 1 + takes_argument
    return _table(proxy.name, directive, settings)


def _table(name: str, directive: Directive, settings: dict[str, str]) -> StickTable:
    with reading(directive):
        expire = parse_time_ms(settings["expire"]) if "expire" in settings else None
        size = parse_size(settings.get("size", "0"))
        length = parse_int(settings["len"], "len") if "len" in settings else None
    return StickTable(name, directive.line, directive.text, expire or None, size, length)


def read_rules(proxy: Proxy, ledger: Ledger) -> StickRules:
    """Read the backend's stick rules in order; the first one that stores decides."""
    rules = StickRules(table=proxy.name)
    for directive in proxy.own("stick on", "stick match", "stick store-request", "stick store-response"):
        reason = _unsupported(directive)
        if reason is not None:
            ledger.skip(directive, reason)
            continue
        ledger.use(directive)
        _apply(rules, directive)
    return rules


def _unsupported(directive: Directive) -> str | None:
    words = directive.words
    if directive.key != "stick on":
        return ("only `stick on` rules are translated: rdpbalancer's table both matches and stores, like "
                "`stick on rdp_cookie(mstshash)`")
    if len(words) < 3:
        return "stick rule without a pattern"
    if "if" in words or "unless" in words:
        return "conditional stick rules have no equivalent: rdpbalancer sticks every user it sees"
    if COOKIE_FETCH.fullmatch(words[2]) is None and words[2] != "src":
        return "rdpbalancer sticks on the user name from the mstshash cookie (or, without one, the address)"
    return None


def _apply(rules: StickRules, directive: Directive) -> None:
    pattern = directive.words[2]
    rules.table = _table_name(directive, rules.table)
    first = not (rules.by_user or rules.source_fallback)
    cookie = COOKIE_FETCH.fullmatch(pattern)
    if cookie is None:  # "src"
        _apply_source(rules, directive, first)
    elif first:
        rules.by_user = True
        rules.prefix = int(cookie[1]) if cookie[1] else None
        rules.notes.append(_cookie_note(directive, rules.prefix))
    else:
        rules.notes.append(
            f"`{directive.text}` (line {directive.line}) never stored anything: HAProxy stores only the first "
            "criterion it extracts for a table, and the rule above always extracts one when the cookie is there"
        )


def _table_name(directive: Directive, default: str) -> str:
    """The table a rule names with ``table NAME`` (one table for all pools in rdpbalancer anyway)."""
    words = directive.words
    if "table" in words[3:-1]:
        return words[words.index("table", 3) + 1]
    return default


def _apply_source(rules: StickRules, directive: Directive, first: bool) -> None:
    rules.source_fallback = True
    where = f"`{directive.text}` (line {directive.line})"
    if first:
        rules.notes.append(f"{where} stuck every client by address; rdpbalancer sticks by user name and uses "
                           'the address only for clients without a cookie (no_cookie = "source-ip")')
    else:
        rules.notes.append(f'{where} stuck clients without a cookie by address: no_cookie = "source-ip"')


def _cookie_note(directive: Directive, prefix: int | None) -> str:
    where = f"`{directive.text}` (line {directive.line})"
    if prefix is None:
        return f"{where}: rdpbalancer sticks each user name to its server, as HAProxy did"
    return (f"{where}: HAProxy stuck on the first {prefix} characters of the cookie, so users sharing them "
            f"(e.g. alexander, alexandra) shared one server; rdpbalancer sticks each whole user name")
