"""The TOML configuration: schema, loader and the small value parsers it is built on.

``load_config(path)`` returns an immutable :class:`Config` or raises :class:`ConfigError`,
the only exception this package lets out.
"""

from rdpbalancer.config.addresses import BackendAddress, ListenAddress, parse_host_port
from rdpbalancer.config.durations import format_duration, parse_duration
from rdpbalancer.config.loader import ConfigError, load_config, parse_config, validate_config
from rdpbalancer.config.schema import (
    BalancerSection,
    Config,
    IdentitySection,
    LogSection,
    PoolConfig,
    ServerConfig,
    StickySection,
)

__all__ = [
    "BackendAddress",
    "BalancerSection",
    "Config",
    "ConfigError",
    "IdentitySection",
    "ListenAddress",
    "LogSection",
    "PoolConfig",
    "ServerConfig",
    "StickySection",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_host_port",
    "validate_config",
]
