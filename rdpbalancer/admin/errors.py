"""The admin surface's one exception type (the reload and the CLI catch it without the server)."""


class AdminError(Exception):
    """The admin surface cannot start safely (e.g. a token file others can read)."""
