"""rdpbalancer: a load balancer for Remote Desktop (RDP) farms."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`__version__`, read when first asked for: importlib.metadata loads socket, selectors and
    threading, which the sans-IO core (proto, policy, the session machine) must not pay for."""
    if name != "__version__":
        raise AttributeError(f"module 'rdpbalancer' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 (lazy on purpose)

    try:
        # one source: pyproject.toml's [project] version, as installed (wheel, sdist or editable)
        found = version("rdpbalancer")
    except PackageNotFoundError:  # a source tree put on sys.path without installing it
        found = "0+unknown"
    globals()["__version__"] = found
    return found
