"""The last good LDAP membership on disk, so a restart while AD is down still routes by group.

JSON, written atomically (temporary file, fsync, rename, fsync of the directory) with mode 0600:
group membership is directory data an unprivileged local user should not read. Each group is
stored with its DN; a group whose DN has changed in the configuration since is not taken from the
cache. A missing file is normal (first start); a corrupt one is reported and ignored, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("rdpbalancer.directory")

CACHE_FORMAT = 1
CACHE_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class CachedMembership:
    fetched_at: float  # when the data was read from LDAP (wall clock)
    groups: Mapping[str, frozenset[str]]


def save_membership(
    path: Path, groups: Mapping[str, frozenset[str]], dns: Mapping[str, str], fetched_at: float
) -> None:
    """Replace the cache file atomically; raises OSError (the caller logs it: the data stays in memory)."""
    document = {
        "format": CACHE_FORMAT,
        "fetched_at": fetched_at,
        "groups": {name: {"dn": dns[name], "members": sorted(members)} for name, members in groups.items()},
    }
    write_atomically(path, json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"))


def load_membership(path: Path, dns: Mapping[str, str]) -> CachedMembership | None:
    """The cached membership of the groups still configured with the same DN, or None. Never raises."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("group cache %s: cannot read: %s; starting without it", path, exc.strerror or exc)
        return None
    try:
        fetched_at, stored = _parse(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("group cache %s is corrupt (%s); ignored until the next successful LDAP fetch", path, exc)
        return None
    groups = {name: members for name, (dn, members) in stored.items() if _same_dn(dns.get(name), dn)}
    if len(groups) < len(dns):
        log.info("group cache %s: no usable data for %s", path, ", ".join(sorted(set(dns) - set(groups))))
    return CachedMembership(fetched_at=fetched_at, groups=groups)


def _parse(raw: bytes) -> tuple[float, dict[str, tuple[str, frozenset[str]]]]:
    document = json.loads(raw)
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a format {CACHE_FORMAT} group cache")
    fetched_at = document["fetched_at"]
    if not isinstance(fetched_at, int | float) or isinstance(fetched_at, bool):
        raise ValueError("fetched_at is not a number")
    return float(fetched_at), {str(name): _parse_group(group) for name, group in document["groups"].items()}


def _parse_group(group: Any) -> tuple[str, frozenset[str]]:
    dn, members = group["dn"], group["members"]
    if not isinstance(dn, str) or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ValueError("a group needs a dn string and a list of member strings")
    return dn, frozenset(members)


def _same_dn(configured: str | None, cached: str) -> bool:
    # DNs compare case-insensitively in AD; spacing variants are rare enough to just refetch.
    return configured is not None and configured.casefold() == cached.casefold()


def write_atomically(path: Path, data: bytes, mode: int = CACHE_FILE_MODE) -> None:
    """After a crash at any point, `path` holds either its old content or `data`, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode does not apply to a leftover temporary file
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (ext4, xfs: a rename is metadata of the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
