"""Read, parse and validate a configuration file; every failure becomes one ConfigError.

``ConfigError`` is the only exception that leaves this module. Pydantic's errors are
translated into ``(dotted.key[0].path, message)`` pairs in the words of the TOML file;
no pydantic text (class names, documentation URLs) reaches the user.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rdpbalancer.config.schema import Config
from rdpbalancer.config.types import ConfigIssues, Loc


class ConfigError(Exception):
    """The configuration at ``path`` is unusable; ``errors`` lists (key path, message) pairs.

    The key path is dotted with ``[i]`` for array items (``pool[0].servers[1].weight``), or
    empty when the problem concerns the whole file (unreadable, TOML syntax).
    """

    def __init__(self, path: str, errors: Sequence[tuple[str, str]] | str) -> None:
        self.path = path
        self.errors: list[tuple[str, str]] = [("", errors)] if isinstance(errors, str) else list(errors)
        super().__init__(path, self.errors)

    def __str__(self) -> str:
        return "\n".join(
            f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}"
            for key, message in self.errors
        )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read the TOML file at ``path``; relative paths inside it start from its directory."""
    shown = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(shown, f"cannot read: {error}") from None
    try:
        # TOML is UTF-8; "-sig" forgives the byte-order mark Windows editors like to add.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(shown, f"cannot read: not UTF-8 text (byte {error.start})") from None
    source_path = os.path.abspath(shown)  # absolute, so a reload finds it whatever the cwd
    return _parse(text, shown, source_path, os.path.dirname(source_path))


def parse_config(
    text: str, path: str = "<string>", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Parse TOML ``text``; ``path`` names it in errors, relative paths start from ``base_dir``.

    ``base_dir`` defaults to the directory of ``path`` (the current directory for "<string>").
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(path))
    return _parse(text, path, path, os.path.abspath(base_dir))


def validate_config(
    document: Mapping[str, Any], path: str = "<dict>", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Validate an already parsed TOML document (a dict as ``tomllib`` returns it)."""
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(path))
    return _validate(document, path, path, os.path.abspath(base_dir))


def _parse(text: str, path: str, source_path: str, base_dir: str) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, _syntax_message(str(error))) from None
    except RecursionError:
        raise ConfigError(path, "arrays or tables nested too deeply") from None
    return _validate(document, path, source_path, base_dir)


def _validate(document: Mapping[str, Any], path: str, source_path: str, base_dir: str) -> Config:
    context = {"source_path": source_path, "base_dir": base_dir}
    try:
        return Config.model_validate(document, context=context)
    except ValidationError as error:
        raise ConfigError(path, list(_translate(error))) from None


_TOML_POSITION = re.compile(r"^(?P<message>.*) \(at (?P<where>line \d+, column \d+|end of document)\)$")


def _syntax_message(text: str) -> str:
    """tomllib's "Invalid value (at line 3, column 7)" -> "line 3, column 7: Invalid value"."""
    match = _TOML_POSITION.match(text)
    if match is None:
        return f"invalid TOML: {text}"
    return f"{match['where']}: {match['message']}"


def _translate(error: ValidationError) -> Iterator[tuple[str, str]]:
    for detail in error.errors():
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, ConfigIssues):
            for loc, message in cause.issues:
                yield dotted(detail["loc"] + loc), message
        else:
            yield dotted(detail["loc"]), _message(detail)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(loc: Loc) -> str:
    """("pool", 0, "servers", 1, "weight") -> "pool[0].servers[1].weight"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else _quote(part)
            text += f".{key}" if text else key
    return text


def _quote(key: str) -> str:
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _message(detail: ErrorDetails) -> str:
    kind, value, ctx = detail["type"], detail["input"], detail.get("ctx", {})
    got = f", got {_show(value)}"
    match kind:
        case "extra_forbidden":
            return "unknown key"
        case "missing":
            return "required key is missing"
        case "value_error":
            return str(ctx["error"])
        case "literal_error":
            return f"expected one of {ctx['expected']}{got}"
        case "greater_than_equal":
            return f"must be at least {ctx['ge']}{got}"
        case "less_than_equal":
            return f"must be at most {ctx['le']}{got}"
        case "int_type" | "int_parsing" | "int_from_float":
            return f"expected an integer{got}"
        case "bool_type" | "bool_parsing":
            return f"expected true or false{got}"
        case "string_type":
            return f"expected a string{got}"
        case "model_type" | "model_attributes_type" | "dict_type":
            return f"expected a table{got}"
        case "tuple_type" | "list_type" if isinstance(value, dict) and len(detail["loc"]) == 1:
            key = detail["loc"][0]
            return f"expected an array of tables: write [[{key}]], not [{key}]"
        case "tuple_type" | "list_type":
            return f"expected an array{got}"
        case _:
            return f"{detail['msg']}{got}"


def _show(value: object) -> str:
    """A value as the user wrote it in TOML, briefly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
