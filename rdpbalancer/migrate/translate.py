"""``translate_haproxy``: an HAProxy configuration in, rdpbalancer TOML and the list of leftovers out.

Steps: split the file into sections, resolve defaults, translate backends into pools (so that
routes can name them), frontends into listeners and routes (creating groups from ACLs), note the
stats page, then list every directive no step used, with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rdpbalancer.migrate.backends import PoolDraft, reconcile_servers, translate_backend
from rdpbalancer.migrate.document import Drafts, StatsPage, build
from rdpbalancer.migrate.frontends import FrontendDraft, Targets, translate_frontend
from rdpbalancer.migrate.groups import GroupRegistry
from rdpbalancer.migrate.haproxy_cfg import Section, parse_sections
from rdpbalancer.migrate.ledger import Ledger
from rdpbalancer.migrate.no_equivalent import reason_for
from rdpbalancer.migrate.proxies import Proxy, resolve_proxies
from rdpbalancer.migrate.toml_out import render

_SECTION_REASONS = {
    "peers": "rdpbalancer shares its sticky table between nodes through the redis store instead of peers",
    "resolvers": "host names are resolved by the system resolver",
    "userlist": "rdpbalancer has no HTTP authentication",
}


@dataclass(frozen=True, slots=True)
class Translation:
    """``toml``: the complete configuration text; ``untranslated``: "line N: directive — reason";
    ``differences``: "line N: directive — how", settings translated with a different meaning."""

    toml: str
    untranslated: list[str]
    differences: list[str] = field(default_factory=list)


def translate_haproxy(cfg_text: str, *, acl_dir: Path | None = None, source_name: str = "haproxy.cfg") -> Translation:
    """Translate ``cfg_text``; ``acl_dir`` is where copies of the ACL files (-f) are, found by name.

    Raises MigrationError (naming the line) when the text is not a readable HAProxy configuration.
    """
    sections = parse_sections(cfg_text)
    proxies = resolve_proxies(sections)
    ledger = Ledger()
    pools, targets = _backends(proxies, ledger)
    reconcile_servers(pools)
    groups = GroupRegistry(acl_dir)
    frontends = _frontends(proxies, targets, groups, ledger)
    stats_pages = [_stats_page(proxy, ledger) for proxy in proxies if proxy.is_stats_page()]
    _other_sections(sections, ledger)
    global_log = any(d.key == "log" for s in sections if s.kind == "global" for d in s.directives)
    ledger.settle((d for s in sections for d in s.directives), lambda d: reason_for(d, global_log=global_log))
    untranslated, differences = ledger.untranslated(), ledger.differences()
    drafts = Drafts(source_name, pools, frontends, groups.groups, stats_pages, untranslated, differences)
    return Translation(render(build(drafts)), [str(entry) for entry in untranslated],
                       [str(entry) for entry in differences])


def _backends(proxies: list[Proxy], ledger: Ledger) -> tuple[list[PoolDraft], Targets]:
    pools: list[PoolDraft] = []
    targets = Targets({}, {})
    for proxy in proxies:
        if proxy.kind == "frontend" or proxy.is_stats_page():
            continue
        result = translate_backend(proxy, ledger)
        if isinstance(result, PoolDraft):
            pools.append(result)
            targets.pools[proxy.name] = result.name
            continue
        targets.reasons[proxy.name] = result
        if proxy.mode() != "tcp":
            _skip_section(proxy.section, result, ledger)
        elif proxy.kind == "backend":
            ledger.skip(proxy.header, f"no pool: {result}")
    return pools, targets


def _frontends(proxies: list[Proxy], targets: Targets, groups: GroupRegistry, ledger: Ledger) -> list[FrontendDraft]:
    return [translate_frontend(proxy, targets, groups, ledger) for proxy in proxies
            if proxy.kind != "backend" and proxy.mode() == "tcp" and not proxy.is_stats_page()]


def _stats_page(proxy: Proxy, ledger: Ledger) -> StatsPage:
    reason = f"part of the HAProxy stats page ({proxy.kind} {proxy.name}): see the [admin] suggestion"
    _skip_section(proxy.section, reason, ledger, inside=reason)
    binds = proxy.own("bind")
    bind = binds[0].words[1] if binds and len(binds[0].words) > 1 else None
    port_text = bind.rpartition(":")[2] if bind else ""
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else None
    return StatsPage(proxy.name, proxy.header.line, bind, port)


def _other_sections(sections: list[Section], ledger: Ledger) -> None:
    """Headers of global and defaults are structure; other non-proxy sections are not translated."""
    for section in sections:
        if section.kind in ("global", "defaults"):
            ledger.use(section.header)
        elif section.kind not in ("frontend", "backend", "listen"):
            reason = _SECTION_REASONS.get(section.kind, "no rdpbalancer equivalent")
            _skip_section(section, f"{section.kind} section: {reason}", ledger)


def _skip_section(section: Section, reason: str, ledger: Ledger, *, inside: str | None = None) -> None:
    """Skip the header with ``reason`` and each directive with ``inside`` (default: "inside <header>")."""
    ledger.skip(section.header, reason)
    inside = inside or f"inside `{section.header.text}` (line {section.line}), not translated"
    for directive in section.directives:
        ledger.skip(directive, inside)
