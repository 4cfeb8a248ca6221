"""Health checks: what each HAProxy backend checked, and the [health] section covering most pools.

HAProxy checks a server only when its line says ``check``. In TCP mode the check opens a TCP
connection, with or without ``option tcp-check`` + ``tcp-check connect``: that is rdpbalancer's
``check = "tcp"``. rdpbalancer's ``"rdp"`` check (a real X.224 Connection Request answered by a
Confirm) is better, but it is a change of behaviour, so the translation only recommends it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rdpbalancer.migrate.haproxy_cfg import Directive, reading
from rdpbalancer.migrate.ledger import Ledger
from rdpbalancer.migrate.proxies import Proxy
from rdpbalancer.migrate.servers import ServerOptions
from rdpbalancer.migrate.values import duration, parse_int, parse_time_ms

# HAProxy's defaults when "inter", "rise" and "fall" are not given (configuration.txt 5.2).
HAPROXY_DEFAULT_INTER_MS = 2000.0
HAPROXY_DEFAULT_RISE = 2
HAPROXY_DEFAULT_FALL = 3

_OTHER_CHECKS = ("httpchk", "ssl-hello-chk", "ldap-check", "mysql-check", "pgsql-check", "redis-check",
                 "smtpchk", "spop-check", "external-check")
_TCP_CHECK_IGNORED = ('ignored by HAProxy too, since "option tcp-check" is not set: its check was a plain '
                      'TCP connect, which is check = "tcp"')
_TCP_CHECK_SCRIPT = ('custom send/expect check steps have no equivalent; rdpbalancer\'s check = "rdp" '
                     "sends a real Connection Request and expects a Confirm")


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """One pool's checks, in rdpbalancer's terms. ``check`` is "tcp" or "none"."""

    check: str
    interval: str
    rise: int
    fall: int
    timeout: str | None = None

    def items(self) -> dict[str, str | int]:
        """The keys to write; a pool without checks needs nothing but ``check = "none"``."""
        if self.check == "none":
            return {"check": "none"}
        items: dict[str, str | int] = {"check": self.check, "interval": self.interval, "rise": self.rise,
                                       "fall": self.fall}
        if self.timeout is not None:
            items["timeout"] = self.timeout
        return items


def backend_health(proxy: Proxy, defaults: ServerOptions, any_check: bool, ledger: Ledger) -> HealthSettings:
    """The settings of one backend; ``defaults`` are its merged ``default-server`` options."""
    if not any_check:
        return HealthSettings("none", duration(HAPROXY_DEFAULT_INTER_MS), HAPROXY_DEFAULT_RISE,
                              HAPROXY_DEFAULT_FALL)
    timeout = proxy.last("timeout check")
    ledger.use(timeout)
    return HealthSettings(
        "tcp",
        duration(defaults.inter_ms or HAPROXY_DEFAULT_INTER_MS),
        defaults.rise or HAPROXY_DEFAULT_RISE,
        defaults.fall or HAPROXY_DEFAULT_FALL,
        _timeout(timeout),
    )


def _timeout(directive: Directive | None) -> str | None:
    if directive is None or len(directive.words) < 3:
        return None
    with reading(directive):
        ms = parse_time_ms(directive.words[2])
    return duration(ms) if ms > 0 else None


def check_port(proxy: Proxy, ledger: Ledger) -> int | None:
    """Read the backend's check method; return the port ``tcp-check connect port N`` checked, if any."""
    for name in _OTHER_CHECKS:
        option = proxy.option(name)
        if option is not None and option.words[0] != "no":
            ledger.skip(option, 'HAProxy checked another protocol; rdpbalancer checks RDP servers with "tcp" '
                        'or "rdp" (a TCP check is written)')
    option = proxy.option("tcp-check")
    enabled = option is not None and option.words[0] != "no"
    ledger.use(option)
    port: int | None = None
    for step in proxy.inherited(*_tcp_check_keys(proxy)):
        if not enabled:
            ledger.skip(step, _TCP_CHECK_IGNORED)
        elif step.key == "tcp-check connect":
            ledger.use(step)
            port = _connect_port(step) or port
        elif step.key != "tcp-check comment":
            ledger.skip(step, _TCP_CHECK_SCRIPT)
    return port


def _tcp_check_keys(proxy: Proxy) -> set[str]:
    directives = list(proxy.directives) + list(proxy.defaults.directives if proxy.defaults else ())
    return {d.key for d in directives if d.words[0] == "tcp-check"}


def _connect_port(step: Directive) -> int | None:
    words = step.words
    for index, word in enumerate(words[:-1]):
        if word == "port":
            with reading(step):
                return parse_int(words[index + 1], "check port")
    return None


def choose_common(settings: list[HealthSettings]) -> HealthSettings | None:
    """The settings most pools with checks share (the first in file order on a tie)."""
    checked = [s for s in settings if s.check != "none"] or settings
    if not checked:
        return None
    counts = Counter(checked)
    return max(checked, key=lambda s: (counts[s], -checked.index(s)))


def pool_override(pool: HealthSettings, common: HealthSettings) -> dict[str, str | int]:
    """The keys of ``pool`` that differ from ``common``: the pool's ``health = { ... }``."""
    if pool.check == common.check == "none":
        return {}
    mine, theirs = pool.items(), common.items()
    return {key: value for key, value in mine.items() if theirs.get(key) != value}
