"""The one exception type that leaves the directory adapters."""

from __future__ import annotations


class DirectoryError(Exception):
    """Group membership cannot be read: the message names the source (URL, DN, file:line) and the cause.

    It never contains a password.
    """
