"""The rdpbalancer TOML, section by section, from what the translation gathered.

Order: [balancer], [sticky], [health], [groups.*], [[route]], [[pool]], the [admin] suggestion,
then the list of untranslated directives. Comments say where each value came from and where
rdpbalancer behaves differently from HAProxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdpbalancer.config.health import DEFAULT_CHECK_TIMEOUT_S
from rdpbalancer.migrate.backends import PoolDraft, ServerDraft
from rdpbalancer.migrate.frontends import FrontendDraft, RouteDraft
from rdpbalancer.migrate.groups import GroupDraft
from rdpbalancer.migrate.health import choose_common, pool_override
from rdpbalancer.migrate.ledger import Untranslated
from rdpbalancer.migrate.toml_out import Entry, Item, ItemsEntry, Scalar, Table, dotted_key
from rdpbalancer.migrate.top_sections import balancer_table, sticky_table
from rdpbalancer.migrate.values import duration

_FAILOVER = ("HAProxy sent a sticky user elsewhere as soon as their server was marked down; rdpbalancer keeps "
             "sending them to it for failover_after (default 60s) so that a blip does not strand their session: "
             'failover_after = "0s" restores HAProxy\'s behaviour')
_RDP_CHECK = ('HAProxy\'s check only opened a TCP connection: check = "tcp". rdpbalancer\'s check = "rdp" '
              "sends a real X.224 Connection Request and expects a Confirm, which also catches a hung session "
              "host: recommended")


@dataclass(frozen=True, slots=True)
class StatsPage:
    """A ``listen`` section serving HAProxy's statistics page."""

    name: str
    line: int
    bind: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class Drafts:
    source_name: str
    pools: list[PoolDraft]
    frontends: list[FrontendDraft]
    groups: list[GroupDraft]
    stats_pages: list[StatsPage]
    untranslated: list[Untranslated]
    differences: list[Untranslated] = field(default_factory=list)  # translated, but meaning something else


def build(drafts: Drafts) -> list[Table]:
    tables = [_header(drafts), balancer_table(drafts.frontends, drafts.pools),
              sticky_table(drafts.pools)]
    tables += _health(drafts.pools)
    tables += [_group(group) for group in drafts.groups]
    tables += _routes(drafts.frontends)
    tables += [_pool(pool, drafts.pools) for pool in drafts.pools]
    tables += [_admin(page) for page in drafts.stats_pages]
    tables.append(_differences(drafts.differences))
    tables.append(_untranslated(drafts.untranslated))
    return tables


def _differences(entries: list[Untranslated]) -> Table:
    if not entries:
        return Table(None, comments=["Every translated setting means what it meant in HAProxy."])
    by_reason: dict[str, list[Untranslated]] = {}
    for entry in entries:
        by_reason.setdefault(entry.reason, []).append(entry)
    lines = ["Translated, but with a difference in meaning (read each before going live):"]
    for reason, same in by_reason.items():
        if len(same) == 1:
            lines.append(f"different ({_lines([same[0].line])}): {same[0].directive} — {reason}")
        else:
            joined = "; ".join(f"{entry.directive} ({_lines([entry.line])})" for entry in same)
            lines.append(f"different: {joined} — {reason}")
    return Table(None, comments=lines, hanging="    ")


def _header(drafts: Drafts) -> Table:
    count = len(drafts.untranslated)
    return Table(None, comments=[
        f"rdpbalancer configuration translated from {drafts.source_name} by `rdpbalancer migrate-haproxy`.",
        "Read the comments before using it: they say where each value comes from and where rdpbalancer "
        "behaves differently from HAProxy. Check it with `rdpbalancer check-config -c FILE`.",
        f"{count} HAProxy directive{'s' if count != 1 else ''} (or parts) not translated: listed at the end.",
    ])


def _health(pools: list[PoolDraft]) -> list[Table]:
    common = choose_common([pool.health for pool in pools])
    if common is None:
        return []
    comments = ["from each backend's `check` server option, `default-server inter/rise/fall` and "
                "`option tcp-check`/`tcp-check connect`; rise and fall count consecutive checks, as in HAProxy"]
    if common.check == "none":
        comments.append("no server had `check` in HAProxy: no health checks")
    comments.append(_RDP_CHECK)
    if common.check != "none" and common.timeout is None:
        comments.append(f"no `timeout check`: HAProxy gave a check up to `inter` ({common.interval}) to complete; "
                        f"rdpbalancer's default timeout, {duration(DEFAULT_CHECK_TIMEOUT_S * 1000)}, applies")
    comments.append(_FAILOVER)
    entries: list[Entry | ItemsEntry] = [Entry(k, v) for k, v in common.items().items()]
    entries += _on_down(pools)
    return [Table("health", entries, comments)]


def _on_down(pools: list[PoolDraft]) -> list[Entry]:
    servers = [s for pool in pools for s in pool.servers if not s.left_out]
    closing = [s.name for s in servers if s.shutdown_on_down]
    if not closing:
        return []
    note = "from `on-marked-down shutdown-sessions`: close the sessions of a server marked down"
    if len(closing) < len(servers):
        note += f" (HAProxy did it for {', '.join(dict.fromkeys(closing))} only; rdpbalancer has one setting)"
    return [Entry("on_down", "shutdown-sessions", [note])]


def _group(group: GroupDraft) -> Table:
    entry = Entry("file", group.file) if group.file is not None else Entry("members", group.members or [])
    return Table(dotted_key("groups", group.name), [entry], list(group.comments))


def _routes(frontends: list[FrontendDraft]) -> list[Table]:
    routed = [f for f in frontends if f.routes and f.listen] or [f for f in frontends if f.routes][:1]
    several = len(routed) > 1  # then each route names its frontend's listeners
    tables: list[Table] = []
    for frontend in routed:
        listeners: list[str | None] = list(frontend.listen) if several else [None]
        for listener in listeners:
            tables += [_route(route, listener) for route in frontend.routes]
    return tables


def _route(route: RouteDraft, listener: str | None) -> Table:
    entries: list[Entry | ItemsEntry] = []
    comments = list(route.comments)
    if listener is not None:
        entries.append(Entry("listener", listener))
    entries += [Entry(name, values) for name, values in route.conditions.items()]
    entries.append(Entry("pool", route.pool) if route.pool is not None else Entry("deny", True))
    return Table("route", entries, comments, array=True)


def _pool(pool: PoolDraft, pools: list[PoolDraft]) -> Table:
    comments = [f"from {pool.kind} {pool.haproxy_name} (line {pool.line})", *pool.comments, *pool.rules.notes]
    if not (pool.rules.by_user or pool.rules.source_fallback):
        comments.append("HAProxy did not stick users to servers in this backend (no `stick on`); rdpbalancer's "
                        "sticky table covers every pool")
    entries: list[Entry | ItemsEntry] = [Entry("name", pool.name), Entry("balance", pool.balance)]
    common = choose_common([p.health for p in pools])
    override = pool_override(pool.health, common) if common is not None else {}
    if override:
        entries.append(Entry("health", override, ["this backend's checks differ from [health]"]))
    entries.append(ItemsEntry("servers", [_server(server) for server in pool.servers]))
    return Table("pool", entries, comments, array=True)


def _server(server: ServerDraft) -> Item:
    fields: dict[str, Scalar] = {"name": server.name, "address": server.address, "weight": server.weight}
    if server.state is not None:
        fields["state"] = server.state
    if server.check is not None:
        fields["check"] = server.check
    if server.max_sessions is not None:
        fields["max_sessions"] = server.max_sessions
    if server.backup:
        fields["backup"] = True
    if server.slowstart is not None:
        fields["slowstart"] = server.slowstart
    comments = list(server.comments)
    if server.check == "none":
        comments.append(f"{server.name}: no `check` in HAProxy, so never checked: check = \"none\"")
    return Item(fields, comments, server.left_out)


def _admin(page: StatsPage) -> Table:
    where = f" on {page.bind}" if page.bind else ""
    comments = [
        f"HAProxy's statistics page (listen {page.name}, line {page.line}){where}: rdpbalancer's admin API and "
        "dashboard replace it. The [admin] section is not available yet: uncomment this when it is. Keep it "
        "on the loopback interface (it controls the balancer) or behind an authenticating proxy.",
    ]
    listen = f"127.0.0.1:{page.port or 9000}"
    return Table("admin", [Entry("listen", listen)], comments, left_out=True)


def _untranslated(entries: list[Untranslated]) -> Table:
    """One line per reason: "untranslated (lines 8, 16): log global — why", several directives joined."""
    if not entries:
        return Table(None, comments=["Every HAProxy directive was translated."])
    by_reason: dict[str, dict[str, list[int]]] = {}
    for entry in entries:
        by_reason.setdefault(entry.reason, {}).setdefault(entry.directive, []).append(entry.line)
    lines = ["Not translated: HAProxy directives without an rdpbalancer equivalent, or without meaning for it."]
    for reason, directives in by_reason.items():
        if len(directives) == 1:
            [(directive, numbers)] = directives.items()
            lines.append(f"untranslated ({_lines(numbers)}): {directive} — {reason}")
        else:
            joined = "; ".join(f"{directive} ({_lines(numbers)})" for directive, numbers in directives.items())
            lines.append(f"untranslated: {joined} — {reason}")
    return Table(None, comments=lines, hanging="    ")  # continuation lines indented: each entry stands out


def _lines(numbers: list[int]) -> str:
    return f"line {numbers[0]}" if len(numbers) == 1 else f"lines {', '.join(map(str, numbers))}"
