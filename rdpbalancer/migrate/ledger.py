"""Which HAProxy directives were translated, and why the others were not.

Every directive of the input ends up in exactly one of two places: used by the translation, or
listed as untranslated with a reason. :meth:`Ledger.settle` lists whatever no step looked at, so
nothing is silently lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rdpbalancer.migrate.haproxy_cfg import Directive


@dataclass(frozen=True, slots=True)
class Untranslated:
    """A directive (or part of one, e.g. one server option) that has no place in the TOML."""

    line: int
    directive: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.directive} — {self.reason}"


class Ledger:
    """Collects uses and skips; a directive may be used by one step and partly skipped by another."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._skipped: dict[tuple[int, str], Untranslated] = {}
        self._skipped_lines: set[int] = set()
        self._differences: dict[tuple[int, str], Untranslated] = {}

    def use(self, *directives: Directive | None) -> None:
        self._used.update(d.line for d in directives if d is not None)

    def skip(self, directive: Directive, reason: str, *, part: str | None = None) -> None:
        """Record ``directive`` (or its ``part``, such as one server option) as not translated.

        The first reason given for a directive wins: defaults are seen by every proxy using them.
        """
        text = directive.text if part is None else f"{_head(directive)} … {part}"
        self._skipped.setdefault((directive.line, text), Untranslated(directive.line, text, reason))
        self._skipped_lines.add(directive.line)

    def differ(self, directive: Directive, part: str, how: str) -> None:
        """``part`` of ``directive`` was translated, but rdpbalancer's setting means something else
        in some case: ``how`` says what (the report lists these apart from the untranslated)."""
        text = f"{_head(directive)} … {part}"
        self._differences.setdefault((directive.line, text), Untranslated(directive.line, text, how))

    def differences(self) -> list[Untranslated]:
        return sorted(self._differences.values(), key=lambda entry: entry.line)

    def seen(self, directive: Directive) -> bool:
        return directive.line in self._used or directive.line in self._skipped_lines

    def settle(self, directives: Iterable[Directive], reason_for: Callable[[Directive], str]) -> None:
        """Skip every directive nobody looked at, with the reason ``reason_for`` gives."""
        for directive in directives:
            if not self.seen(directive):
                self.skip(directive, reason_for(directive))

    def untranslated(self) -> list[Untranslated]:
        """Everything skipped, in line order (stable for several parts of one line)."""
        return sorted(self._skipped.values(), key=lambda entry: entry.line)


def _head(directive: Directive) -> str:
    """The words that identify a directive whose part is shown: "server TS01", "stick-table"."""
    named = directive.words[0] in ("server", "bind")
    return " ".join(directive.words[: 2 if named else 1])
