"""HAProxy proxies (frontend, backend, listen), each with the defaults section it inherits.

A proxy inherits from the last ``defaults`` section above it, or from the one it names with
``from``. A setting written in the proxy replaces the inherited one; ``default-server`` lines add
up (the proxy's options refine those of its defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from rdpbalancer.migrate.haproxy_cfg import Directive, MigrationError, Section


@dataclass(frozen=True, slots=True)
class Proxy:
    section: Section
    defaults: Section | None

    @property
    def name(self) -> str:
        return self.section.name or ""

    @property
    def kind(self) -> str:
        return self.section.kind

    @property
    def header(self) -> Directive:
        return self.section.header

    @property
    def directives(self) -> tuple[Directive, ...]:
        return self.section.directives

    def own(self, *keys: str) -> list[Directive]:
        return [d for d in self.section.directives if d.key in keys]

    def inherited(self, *keys: str) -> list[Directive]:
        """Directives with one of ``keys`` from the defaults, then from the proxy itself."""
        inherited = [d for d in self.defaults.directives if d.key in keys] if self.defaults else []
        return inherited + self.own(*keys)

    def last(self, *keys: str) -> Directive | None:
        """The setting in effect: the proxy's last one, else its defaults' last one."""
        own = self.own(*keys)
        if own:
            return own[-1]
        inherited = self.inherited(*keys)
        return inherited[-1] if inherited else None

    def option(self, name: str) -> Directive | None:
        """The ``option NAME`` or ``no option NAME`` in effect (check ``.words[0] == "no"``)."""
        return self.last(f"option {name}", f"no option {name}")

    def mode(self) -> str:
        directive = self.last("mode")
        return directive.words[1] if directive is not None and len(directive.words) > 1 else "tcp"

    def is_stats_page(self) -> bool:
        return any(d.key in ("stats enable", "stats uri") for d in self.section.directives)


def resolve_proxies(sections: list[Section]) -> list[Proxy]:
    """The frontend, backend and listen sections in file order, with their defaults."""
    proxies: list[Proxy] = []
    named: dict[str, Section] = {}
    last_defaults: Section | None = None
    for section in sections:
        if section.kind == "defaults":
            last_defaults = section
            if section.name is not None:
                named[section.name] = section
        elif section.kind in ("frontend", "backend", "listen"):
            proxies.append(Proxy(section, _defaults_for(section, named, last_defaults)))
    return proxies


def _defaults_for(section: Section, named: dict[str, Section], last: Section | None) -> Section | None:
    if section.from_defaults is None:
        return last
    if section.from_defaults not in named:
        raise MigrationError(section.line, f"defaults section {section.from_defaults!r} is not defined above")
    return named[section.from_defaults]
