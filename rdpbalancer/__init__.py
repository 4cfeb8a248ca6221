"""rdpbalancer: a load balancer for Remote Desktop (RDP) farms."""

from importlib.metadata import PackageNotFoundError, version

try:
    # one source: pyproject.toml's [project] version, as installed (wheel, sdist or editable)
    __version__ = version("rdpbalancer")
except PackageNotFoundError:  # a source tree put on sys.path without installing it
    __version__ = "0+unknown"
