"""Migration from HAProxy: translate its configuration, read its stick-table dumps.

``translate_haproxy(text)`` returns the rdpbalancer TOML (``.toml``) and the directives it could
not translate (``.untranslated``); ``parse_show_table(text)`` reads a runtime-API ``show table``
dump. :class:`MigrationError` is the one exception this package raises for bad input.
"""

from rdpbalancer.migrate.haproxy_cfg import MigrationError
from rdpbalancer.migrate.show_table import (
    ShowTable,
    ShowTableEntry,
    SkippedLine,
    parse_show_table,
    parse_show_tables,
    resolve_server_names,
)
from rdpbalancer.migrate.translate import Translation, translate_haproxy

__all__ = [
    "MigrationError",
    "ShowTable",
    "ShowTableEntry",
    "SkippedLine",
    "Translation",
    "parse_show_table",
    "parse_show_tables",
    "resolve_server_names",
    "translate_haproxy",
]
