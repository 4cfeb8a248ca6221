"""Group files in the format of the HAProxy ACL files they replace: one user per line.

`#` starts a comment line, blank lines are ignored, whitespace around a name is stripped. A name
is keyed exactly like a cookie (`model.member_key`): UTF-8 or else Windows-1252, `DOMAIN\\` and
`@domain` dropped, lower-cased. A line with whitespace or control characters inside the name is
an error naming the file and line: it is usually two names on one line, or a stray paste.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.model import member_key

log = logging.getLogger("rdpbalancer.directory")

_UTF8_BOM = b"\xef\xbb\xbf"  # Notepad writes one at the start of a "UTF-8" file
_COMMENT = b"#"

Signature = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino): a rename-over changes the inode


def read_group_file(path: Path) -> frozenset[str]:
    """The member keys listed in `path`; DirectoryError names the file (and line) on any problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DirectoryError(f"group file {path}: cannot read: {exc.strerror or exc}") from None
    return parse_group_file(data, str(path))


def parse_group_file(data: bytes, origin: str) -> frozenset[str]:
    data = data.removeprefix(_UTF8_BOM)
    users: set[str] = set()
    for number, line in enumerate(data.splitlines(), start=1):
        user = _parse_line(line.strip(), origin, number)
        if user is not None:
            users.add(user)
    return frozenset(users)


def _parse_line(line: bytes, origin: str, number: int) -> str | None:
    if not line or line.startswith(_COMMENT):
        return None
    if any(byte < 0x21 or byte == 0x7F for byte in line):  # space, tab, control characters
        raise DirectoryError(
            f"{origin}:{number}: {line.decode('utf-8', 'backslashreplace')!r}:"
            " a user name cannot contain spaces or control characters (one user per line)"
        )
    key = member_key(line)
    if key is None:
        raise DirectoryError(f"{origin}:{number}: {line.decode('utf-8', 'backslashreplace')!r}: no user name")
    return key


def file_signature(path: Path) -> Signature:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileGroupWatcher:
    """One group file, re-read only when its signature changes; the last good content survives errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: frozenset[str] = frozenset()
        self.error: str | None = None  # why the current content is not what the file says, if it is not
        self.loaded = False  # whether `members` ever came from the file
        self._signature: Signature | None = None

    def poll(self) -> bool:
        """Re-read the file if it changed; True when `members` changed. Never raises for file problems."""
        try:
            signature = file_signature(self.path)
        except OSError as exc:
            self._fail(f"group file {self.path}: cannot read: {exc.strerror or exc}", None)
            return False
        if signature == self._signature:
            return False
        try:
            members = read_group_file(self.path)
        except DirectoryError as exc:
            self._fail(str(exc), signature)
            return False
        return self._succeed(members, signature)

    def _fail(self, message: str, signature: Signature | None) -> None:
        if message != self.error:  # once per problem, not once per poll
            kept = f"keeping the last good content ({len(self.members)} users)" if self.loaded else "no users"
            log.error("%s; %s", message, kept)
        self.error = message
        self._signature = signature  # a bad file is not re-read until it changes again

    def _succeed(self, members: frozenset[str], signature: Signature) -> bool:
        changed = members != self.members or not self.loaded
        if self.error is not None or (self.loaded and changed):
            log.info("group file %s: %d users", self.path, len(members))
        self.members, self.error, self.loaded, self._signature = members, None, True, signature
        return changed
