"""What the configuration says about each host's session source (compiled by config/compile.py):
plain values, and the two secret files' readers, which name the file in every error."""

from __future__ import annotations

import hmac
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rdpbalancer.policy.host_sessions import SessionRules

MIN_TOKEN_LENGTH = 16
ENV_PREFIX = "RDPBALANCER_SESSIONS_"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The service account that lists sessions. Never in a log line or a repr."""

    user: str
    password: str = field(repr=False)
    domain: str = ""

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, domain={self.domain!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class HostSource:
    """How one server's sessions are learnt."""

    server: str
    host: str
    kind: str  # "windows" | "xrdp" | "command" | "push"
    interval_s: float
    timeout_s: float
    stale_after_s: float
    port: int | None = None
    command: tuple[str, ...] = ()
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class SessionsPlan:
    """Every server's source, every pool's rules, the push tokens; empty: no directory."""

    sources: tuple[HostSource, ...] = ()
    rules: dict[str, SessionRules] = field(default_factory=dict)
    push_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    max_parallel: int = 8

    @property
    def enabled(self) -> bool:
        return bool(self.sources)


def _secret_file(path: Path, what: str) -> dict[str, object]:
    try:
        mode = path.stat().st_mode
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not TOML ({what}): {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                         f"run: chmod 600 {path}")
    return data


def read_credentials(path: Path) -> Credentials:
    data = _secret_file(path, 'user = "...", password = "...", domain = "..."')
    unknown = sorted(set(data) - {"user", "password", "domain"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (expected user, password, domain)")
    user, password, domain = data.get("user"), data.get("password"), data.get("domain", "")
    if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
        raise ValueError(f"{path}: `user` and `password` must be non-empty strings")
    if not isinstance(domain, str):
        raise ValueError(f"{path}: `domain` must be a string")
    return Credentials(user, password, domain)


def credentials_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> Credentials | None:
    user, password = environ.get(ENV_PREFIX + "USER"), environ.get(ENV_PREFIX + "PASSWORD")
    if not user or not password:
        return None
    return Credentials(user, password, environ.get(ENV_PREFIX + "DOMAIN", ""))


def read_push_tokens(path: Path, servers: set[str]) -> dict[str, str]:
    data = _secret_file(path, 'SERVER = "token", one line per host')
    tokens: dict[str, str] = {}
    holder: dict[str, str] = {}  # token -> the first server that has it
    for server, token in data.items():
        if server not in servers:
            raise ValueError(f"{path}: {server!r} is not a server of any pool")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"{path}: the token of {server} must be a string of at least "
                             f"{MIN_TOKEN_LENGTH} characters")
        first = holder.setdefault(token.strip(), server)
        if first != server:
            raise ValueError(f"{path}: {first} and {server} share one token; each host needs its own "
                             "(a host's token pushes for that host only)")
        tokens[server] = token
    return tokens


def admin_token_clash(tokens: dict[str, str], admin_token_file: Path | None) -> str | None:
    """The fault if a push token is the admin token: that host would have every right of the
    API. The admin token is read as admin/server.py reads it (the file's text, stripped); a
    file that cannot be read is the admin server's to report, not this check's."""
    if admin_token_file is None:
        return None
    try:
        admin = admin_token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    for server, token in tokens.items():
        if admin and hmac.compare_digest(token.strip().encode(), admin.encode()):
            return (f"the token of {server} is the admin token ([admin] token_file = {admin_token_file}); "
                    "a host's push token must differ from it, or the host could do anything the admin can")
    return None
