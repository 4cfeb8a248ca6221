"""Read an HAProxy configuration into sections of directives, without interpreting them.

The line syntax is HAProxy 2.6's (configuration.txt 2.2): words are separated by blanks, ``#``
starts a comment, a backslash escapes the next character, single quotes are literal and double
quotes allow escapes. A section starts with its keyword wherever it is indented; every other line
is a directive of the section above it. :class:`MigrationError` is the only exception that
leaves the ``migrate`` package; it names the line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PROXY_KINDS = frozenset({"defaults", "frontend", "backend", "listen"})
# Sections HAProxy 2.6 knows besides proxies; none has an rdpbalancer equivalent.
OTHER_SECTION_KINDS = frozenset(
    {"global", "peers", "resolvers", "userlist", "mailers", "program", "http-errors", "ring", "cache",
     "log-forward", "fcgi-app"}
)
SECTION_KINDS = PROXY_KINDS | OTHER_SECTION_KINDS

# Keywords that take a sub-keyword: "option tcplog" and "no option tcplog" are one setting each.
_TWO_WORD_KEYWORDS = frozenset(
    {"option", "timeout", "stats", "stick", "tcp-request", "tcp-response", "tcp-check", "http-request",
     "http-response", "http-check", "http-after-response"}
)
# Backslash sequences HAProxy replaces; any other "\c" stays as written (e.g. "\d" in a regex).
_ESCAPES = {"\\": "\\", " ": " ", "#": "#", "'": "'", '"': '"', "r": "\r", "n": "\n", "t": "\t"}
_HEX_ESCAPE_LENGTH = 2  # "\xNN"


class MigrationError(Exception):
    """The HAProxy configuration cannot be read; ``line`` is 1-based (None: the whole file)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


@contextmanager
def reading(directive: Directive) -> Iterator[None]:
    """Turn a ValueError raised while reading a value of ``directive`` into a MigrationError."""
    try:
        yield
    except ValueError as error:
        raise MigrationError(directive.line, f"{directive.text}: {error}") from None


@dataclass(frozen=True, slots=True)
class Directive:
    """One non-empty line: its number, its words (unescaped) and its text as written."""

    line: int
    words: tuple[str, ...]
    text: str

    @property
    def key(self) -> str:
        """The keyword that names the setting: "bind", "option tcplog", "no option tcplog"."""
        words = self.words
        if words[0] == "no" and len(words) > 2 and words[1] == "option":
            return f"no option {words[2]}"
        if words[0] in _TWO_WORD_KEYWORDS and len(words) > 1:
            return f"{words[0]} {words[1]}"
        return words[0]


@dataclass(frozen=True, slots=True)
class Section:
    """``kind`` ("backend", "global"...), its ``name`` if any, the header line and the body."""

    kind: str
    name: str | None
    header: Directive
    directives: tuple[Directive, ...]
    from_defaults: str | None = None  # "backend X from D": inherit from the named defaults D

    @property
    def line(self) -> int:
        return self.header.line


@dataclass(slots=True)
class _OpenSection:
    header: Directive
    directives: list[Directive] = field(default_factory=list)


def parse_sections(text: str) -> list[Section]:
    """Split ``text`` into sections; raise MigrationError for a line outside any section."""
    opened: list[_OpenSection] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        words, shown = split_words(raw, number)
        if not words:
            continue
        directive = Directive(number, tuple(words), shown)
        if words[0].startswith("."):
            raise MigrationError(number, f"{words[0]}: conditional blocks and .diag/.notice/.warning/.alert "
                                 "are not supported; resolve them by hand first")
        if words[0] in SECTION_KINDS:
            opened.append(_OpenSection(directive))
        elif not opened:
            raise MigrationError(number, f"{words[0]!r} outside any section: a configuration starts with a "
                                 "section keyword (global, defaults, frontend, backend, listen...)")
        else:
            opened[-1].directives.append(directive)
    sections = [_close(section) for section in opened]
    _check_unique_names(sections)
    return sections


def _close(section: _OpenSection) -> Section:
    header = section.header
    kind, args = header.words[0], list(header.words[1:])
    from_defaults = None
    if kind in PROXY_KINDS and len(args) >= 2 and args[-2] == "from":
        from_defaults = args[-1]
        del args[-2:]
    if kind in PROXY_KINDS - {"defaults"} and not args:
        raise MigrationError(header.line, f"{kind} without a name")
    if len(args) > 1 and kind in PROXY_KINDS:
        raise MigrationError(header.line, f"unexpected words after the {kind} name: {' '.join(args[1:])!r}")
    name = args[0] if args else None
    return Section(kind, name, header, tuple(section.directives), from_defaults)


def _check_unique_names(sections: list[Section]) -> None:
    """Like HAProxy: a frontend and a backend may share a name; a listen is both."""
    for side in ({"frontend", "listen"}, {"backend", "listen"}):
        seen: dict[str, int] = {}
        for section in sections:
            if section.kind in side and section.name is not None:
                if section.name in seen:
                    raise MigrationError(section.line, f"proxy name {section.name!r} already used on line "
                                         f"{seen[section.name]}")
                seen[section.name] = section.line


def split_words(line: str, number: int) -> tuple[list[str], str]:
    """Return the words of ``line`` and its text up to any comment, stripped."""
    words: list[str] = []
    current: list[str] | None = None  # None between words
    quote: str | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if quote == "'" and char != "'":
            current = _append(current, char)
        elif char == quote:
            quote = None
        elif char == "\\" and quote != "'":
            text, index = _escape(line, index, number)
            current = _append(current, text)
        elif quote is None and char in "'\"":
            quote, current = char, _append(current, "")
        elif quote is None and char in " \t":
            _flush(words, current)
            current = None
        elif quote is None and char == "#":
            break
        else:
            current = _append(current, char)
        index += 1
    if quote is not None:
        raise MigrationError(number, f"unterminated {quote} quote")
    _flush(words, current)
    return words, line[:index].strip()


def _append(current: list[str] | None, text: str) -> list[str]:
    current = [] if current is None else current
    current.append(text)
    return current


def _flush(words: list[str], current: list[str] | None) -> None:
    if current is not None:
        words.append("".join(current))


def _escape(line: str, index: int, number: int) -> tuple[str, int]:
    """The text a backslash at ``index`` stands for, and the index of its last character."""
    if index + 1 >= len(line):
        raise MigrationError(number, "backslash at the end of the line (HAProxy has no line continuation)")
    char = line[index + 1]
    if char in _ESCAPES:
        return _ESCAPES[char], index + 1
    digits = line[index + 2 : index + 2 + _HEX_ESCAPE_LENGTH]
    if char == "x" and len(digits) == _HEX_ESCAPE_LENGTH and all(c in "0123456789abcdefABCDEF" for c in digits):
        return chr(int(digits, 16)), index + 1 + _HEX_ESCAPE_LENGTH
    return "\\" + char, index + 1
