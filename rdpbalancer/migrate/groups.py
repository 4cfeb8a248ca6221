"""``[groups.NAME]`` from HAProxy's user-name ACLs, with what changes in how names match.

HAProxy compared (the first N bytes of) the raw mstshash cookie with each entry of the ACL file;
rdpbalancer compares the whole user name, domain stripped and case ignored. Where an entry behaves
differently, the group's comments say so: this is where a department's users could silently land
on another pool after the migration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from rdpbalancer.migrate.acls import CookieAcl
from rdpbalancer.migrate.servers import safe_name

_SHOWN_NAMES = 8  # entries listed in one warning before "and N more"
# Characters Windows does not allow in account names (so no cookie ever carries them as a name).
_NOT_IN_ACCOUNT_NAMES = re.compile(r'["/\[\]:;|=,+*?<>\x00-\x1f]')


@dataclass(slots=True)
class GroupDraft:
    name: str
    file: str | None = None
    members: list[str] | None = None
    comments: list[str] = field(default_factory=list)


class GroupRegistry:
    """The groups made so far, one per ACL file (found by its path) or per ACL with inline names."""

    def __init__(self, acl_dir: Path | None) -> None:
        self.groups: list[GroupDraft] = []
        self._acl_dir = acl_dir
        self._by_key: dict[str, GroupDraft] = {}

    def for_acl(self, acl_name: str, acl: CookieAcl) -> list[str]:
        """The names of the groups that stand for ``acl`` (created on first use)."""
        names = [self._file_group(path, ignore_case, acl).name for path, ignore_case in acl.files]
        if acl.values:
            names.append(self._members_group(acl_name, acl).name)
        return list(dict.fromkeys(names))

    def _file_group(self, path: str, ignore_case: bool, acl: CookieAcl) -> GroupDraft:
        target = os.path.abspath(self._acl_dir / PurePath(path).name) if self._acl_dir else path
        if target in self._by_key:
            return self._by_key[target]
        group = self._new(PurePath(path).name or "group", target)
        group.file = target
        group.comments += [_source(acl), _semantics(acl.prefix, ignore_case), *self._location(path, target)]
        group.comments += _entry_warnings(Path(target), acl.prefix)
        return group

    def _members_group(self, acl_name: str, acl: CookieAcl) -> GroupDraft:
        key = f"acl:{acl.directive.line}"
        if key in self._by_key:
            return self._by_key[key]
        group = self._new(acl_name, key)
        group.members = list(dict.fromkeys(value for value, _ in acl.values))
        ignore_case = all(flag for _, flag in acl.values)
        group.comments += [_source(acl), _semantics(acl.prefix, ignore_case)]
        group.comments += _name_warnings(group.members, acl.prefix)
        return group

    def _new(self, wanted: str, key: str) -> GroupDraft:
        base, notes = safe_name(wanted, "group")
        taken = {group.name for group in self.groups}
        name, number = base, 1
        while name in taken:
            number += 1
            name = f"{base}_{number}"
        group = GroupDraft(name, comments=notes)
        self.groups.append(group)
        self._by_key[key] = group
        return group

    def _location(self, original: str, target: str) -> list[str]:
        if self._acl_dir is None:
            kept = "HAProxy's path kept"
            if not PurePath(original).is_absolute():
                kept += " (relative: rdpbalancer reads it from the directory of this file)"
            return [f"{kept}; use --acl-dir DIR to point at copies of the ACL files"]
        found = "" if os.path.isfile(target) else " — NOT FOUND there: copy it or fix this path"
        return [f"HAProxy read {original}; looked up by name in {self._acl_dir}{found}"]


def _source(acl: CookieAcl) -> str:
    return f"from `{acl.directive.text}` (line {acl.directive.line})"


def _semantics(prefix: int | None, ignore_case: bool) -> str:
    compared = f"the first {prefix} characters of the" if prefix is not None else "the whole"
    case = "ignoring case" if ignore_case else "case-sensitively (no -i)"
    return (f"HAProxy compared {compared} mstshash cookie ({case}) with each entry; rdpbalancer compares "
            "whole user names, ignoring case, with the domain stripped ([identity] strip_domain). So a client "
            "that sent DOMAIN\\name, which never matched under HAProxy, matches now"
            + ("; if the prefix was there for clients that send truncated names, see [identity] truncated_length"
               if prefix is not None else ""))


def _entry_warnings(path: Path, prefix: int | None) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return [f"could not read the file here ({error.strerror}): check its entries against the rules above"]
    # HAProxy pattern files: blank lines and "#" lines skipped, leading blanks stripped (7.1).
    entries = [line.lstrip(" \t") for line in text.splitlines()]
    names = [entry for entry in entries if entry and not entry.startswith("#")]
    return _name_warnings(names, prefix) or [f"checked its {len(names)} entries: none needs attention"]


def _name_warnings(names: list[str], prefix: int | None) -> list[str]:
    checks: list[tuple[list[str], str]] = []
    if prefix is not None:
        checks += [
            ([n for n in names if len(n.encode()) > prefix],
             f"never matched under HAProxy (longer than {prefix} bytes); rdpbalancer matches them now"),
            ([n for n in names if len(n.encode()) == prefix],
             f"under HAProxy also matched longer names beginning with these {prefix} characters; rdpbalancer "
             "matches only the exact name"),
        ]
    checks += [
        ([n for n in names if "\\" in n or "@" in n],
         "contain a domain: rdpbalancer strips the domain from user names, so these never match; list bare names"),
        ([n for n in names if _NOT_IN_ACCOUNT_NAMES.search(n) or n != n.rstrip()],
         "cannot be a Windows account name as written (reserved character or trailing blank): they never match"),
        ([n for n in names if not n.isascii()],
         "contain non-ASCII characters: HAProxy compared raw bytes (mstsc sends the ANSI code page), "
         "rdpbalancer decodes the name first, so these may match now where they did not"),
    ]
    return [f"entries that {why}: {_some(found)}" for found, why in checks if found]


def _some(names: list[str]) -> str:
    shown = ", ".join(f'"{name}"' for name in names[:_SHOWN_NAMES])  # as written: no escaping
    more = len(names) - _SHOWN_NAMES
    return f"{shown} and {more} more" if more > 0 else shown
