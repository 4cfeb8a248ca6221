"""Why a directive nobody translated has no place in rdpbalancer's configuration, in a few words."""

from __future__ import annotations

from rdpbalancer.migrate.haproxy_cfg import Directive

_RUN_AS = "run rdpbalancer under systemd or in its Docker image, which set the user and limits"
_LOGS = "rdpbalancer logs one line per connection to stdout (client, user, server, bytes, duration); see [log]"
_NO_IDLE_TIMEOUT = ("rdpbalancer has no inactivity timeout: a connection lasts until either side closes it, "
                    "and TCP keepalive on both legs finds dead peers")
_STATS_PAGE = "part of the HAProxy stats page: see the [admin] suggestion"

REASONS: dict[str, str] = {
    "daemon": "rdpbalancer runs in the foreground; start it with systemd or Docker",
    "master-worker": "rdpbalancer runs in the foreground; start it with systemd or Docker",
    "user": _RUN_AS,
    "group": _RUN_AS,
    "uid": _RUN_AS,
    "gid": _RUN_AS,
    "ulimit-n": _RUN_AS,
    "chroot": "no chroot; use the systemd unit's sandboxing or the Docker image",
    "pidfile": "no pid file; systemd or Docker track the process",
    "nbproc": "rdpbalancer runs one event loop",
    "nbthread": "rdpbalancer runs one event loop",
    "cpu-map": "rdpbalancer runs one event loop",
    "maxconn": "rdpbalancer has no connection limit",
    "stats socket": "HAProxy's runtime API: rdpbalancer's admin API replaces it (the [admin] section is coming)",
    "stats timeout": "setting of the runtime API socket: see the [admin] section when it exists",
    "stats maxconn": "setting of the runtime API socket: see the [admin] section when it exists",
    "log": _LOGS,
    "log-format": _LOGS,
    "log-tag": _LOGS,
    "log-send-hostname": _LOGS,
    "option tcplog": _LOGS,
    "option httplog": _LOGS,
    "option logasap": _LOGS,
    "option log-health-checks": "rdpbalancer logs every server state change of its health checks",
    "option dontlognull": "rdpbalancer counts a connect-and-close without data as a probe, not as an error",
    "option dontlog-normal": _LOGS,
    "mode": "rdpbalancer is always a TCP proxy for RDP",
    "timeout client": _NO_IDLE_TIMEOUT,
    "timeout server": _NO_IDLE_TIMEOUT,
    "timeout tunnel": _NO_IDLE_TIMEOUT,
    "timeout client-fin": _NO_IDLE_TIMEOUT,
    "timeout server-fin": _NO_IDLE_TIMEOUT,
    "timeout queue": "rdpbalancer has no queue (no per-server connection limit)",
    "retries": "rdpbalancer tries up to max_connect_attempts different servers for a new user (default 3), "
               "all within connect_timeout",
    "option redispatch": "rdpbalancer always tries the next server when connecting for a new user fails; a "
                         "returning user is not moved (their session lives on their server)",
    "option persist": "rdpbalancer keeps sending a sticky user to their down server for [health] failover_after "
                      '(default 60s); failover_after = "never" comes closest to option persist',
    "option tcpka": "rdpbalancer enables TCP keepalive on both legs",
    "option clitcpka": "rdpbalancer enables TCP keepalive on both legs",
    "option srvtcpka": "rdpbalancer enables TCP keepalive on both legs",
    "option splice-auto": "relay internals: rdpbalancer chooses itself",
    "option splice-request": "relay internals: rdpbalancer chooses itself",
    "option splice-response": "relay internals: rdpbalancer chooses itself",
    "option nolinger": "relay internals: rdpbalancer closes connections cleanly",
    "option abortonclose": "relay internals: rdpbalancer closes connections cleanly",
    "persist": "rdpbalancer sends a client with a broker routing token (msts cookie) to the address in it",
    "description": "documentation only",
    "hash-type": "rdpbalancer does not hash",
    "fullconn": "rdpbalancer has no per-server connection limit",
    "stats enable": _STATS_PAGE,
    "stats uri": _STATS_PAGE,
    "stats realm": _STATS_PAGE,
    "stats auth": _STATS_PAGE,
    "stats show-node": _STATS_PAGE,
    "stats show-legends": _STATS_PAGE,
    "stats hide-version": _STATS_PAGE,
    "stats refresh": _STATS_PAGE,
    "stats admin": _STATS_PAGE,
}

_GENERIC = "no rdpbalancer equivalent known to the migration: review it by hand"


def reason_for(directive: Directive, *, global_log: bool) -> str:
    """The reason to show for ``directive``; ``global_log``: the global section defines a log target."""
    key = directive.key
    if key == "log" and directive.words[1:] == ("global",) and not global_log:
        return f"{_LOGS} (it had no effect in HAProxy either: the global section defines no log target)"
    if key in REASONS:
        return REASONS[key]
    if directive.words[0] in REASONS:
        return REASONS[directive.words[0]]
    if key.startswith(("tune.", "ssl-", "ca-base", "crt-base")):
        return "HAProxy process tuning: no equivalent"
    return _GENERIC
