"""Where `rdpbalancer ctl` finds the admin API (URL and token), and its HTTP calls.

Standard library only (urllib), so `ctl` starts fast and needs nothing the balancer host lacks.
Every request has a timeout; every failure becomes one :class:`CtlError` with a message meant
for the person at the terminal.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdpbalancer import __version__

DEFAULT_URL = "http://127.0.0.1:9000"  # [admin] listen's default
DEFAULT_TIMEOUT_S = 10.0  # the API answers in milliseconds; a stuck balancer must not hang a script
URL_ENV = "RDPBALANCER_URL"
TOKEN_ENV = "RDPBALANCER_TOKEN"
EXIT_API = 1  # the API refused, or could not be reached
EXIT_USAGE = 2  # bad arguments or input files (argparse uses 2 too)
# a wildcard listen address accepts on every interface; the client connects to loopback
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class CtlError(Exception):
    """A failure to report in one message, and the exit status it calls for."""

    def __init__(self, message: str, exit_code: int = EXIT_API) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- where: URL and token ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Target:
    url: str  # base URL without a trailing slash
    token: str | None
    token_from: str | None = None  # "--token-file FILE", "RDPBALANCER_TOKEN", "FILE [admin] token_file"


@dataclass(frozen=True, slots=True)
class ConfigAdmin:
    """What a balancer's configuration file says about reaching its admin API."""

    path: str
    enabled: bool
    url: str
    token_file: Path | None


def resolve_target(url_flag: str | None, token_file_flag: str | None, config_path: str | None,
                   env: Mapping[str, str] | None = None) -> Target:
    """Flags win over the environment, which wins over `-c FILE`; then the default URL.

    A token file is read only when its source is the one that wins, so a stale `token_file`
    in a configuration does not stop a command given a token another way.
    """
    env = os.environ if env is None else env
    config = read_config_admin(config_path) if config_path else None
    return Target(_url(url_flag, env, config), *_token(token_file_flag, env, config))


def _url(url_flag: str | None, env: Mapping[str, str], config: ConfigAdmin | None) -> str:
    if url_flag:
        return normalize_url(url_flag)
    if env.get(URL_ENV):
        return normalize_url(env[URL_ENV])
    if config is not None:
        if not config.enabled:
            raise CtlError(f"{config.path}: [admin] enabled = false: this balancer has no admin API", EXIT_USAGE)
        return config.url
    return DEFAULT_URL


def _token(token_file_flag: str | None, env: Mapping[str, str],
           config: ConfigAdmin | None) -> tuple[str | None, str | None]:
    if token_file_flag:
        return read_token_file(Path(token_file_flag)), f"--token-file {token_file_flag}"
    if env.get(TOKEN_ENV, "").strip():
        return env[TOKEN_ENV].strip(), TOKEN_ENV
    if config is not None and config.token_file is not None:
        return read_token_file(config.token_file), f"{config.path} [admin] token_file"
    return None, None


def normalize_url(url: str) -> str:
    """`127.0.0.1:9000` -> `http://127.0.0.1:9000`; no trailing slash; http(s) only."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CtlError(f"invalid URL {url!r}: expected e.g. http://127.0.0.1:9000", EXIT_USAGE)
    return url.rstrip("/")


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CtlError(f"cannot read token file {path}: {reason}", EXIT_USAGE) from None
    if not token:
        raise CtlError(f"token file {path} is empty", EXIT_USAGE)
    return token


def read_config_admin(path: str) -> ConfigAdmin:
    """`[admin] listen` and `token_file` from a balancer's TOML file (validated as the balancer does)."""
    # imported here: the configuration schema pulls in pydantic, which the other commands never need
    from rdpbalancer.config import ConfigError, load_config  # noqa: PLC0415

    try:
        admin = load_config(path).admin
    except ConfigError as exc:
        raise CtlError(f"invalid configuration\n{exc}", EXIT_USAGE) from None
    host = _WILDCARDS.get(admin.listen.host, admin.listen.host)
    netloc = f"[{host}]" if ":" in host else host
    return ConfigAdmin(path, admin.enabled, f"http://{netloc}:{admin.listen.port}", admin.token_file)


# -- how: HTTP ------------------------------------------------------------------------------------------

class ApiClient:
    """JSON over HTTP to one balancer; every method returns the decoded JSON answer."""

    def __init__(self, target: Target, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.target, self.timeout_s = target, timeout_s
        # no proxies: the admin API is reached directly, whatever http_proxy says
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self.call("GET", path)

    def call(self, method: str, path: str, body: Any = None, timeout_s: float | None = None) -> Any:
        request = urllib.request.Request(self.target.url + path, method=method, headers=self._headers(body))
        if body is not None:
            request.data = json.dumps(body, ensure_ascii=False).encode()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach {self.target.url}: {describe_error(exc.reason, timeout)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CtlError(f"{method} {self.target.url}{path}: {describe_error(exc, timeout)}") from None
        return _decode(raw, f"{method} {self.target.url}{path}")

    def _headers(self, body: Any) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"rdpbalancer-ctl/{__version__}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.target.token is not None:
            headers["Authorization"] = f"Bearer {self.target.token}"
        return headers

    def _refused(self, exc: urllib.error.HTTPError) -> CtlError:
        with exc:
            try:
                message = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError, OSError):
                message = exc.reason
        return CtlError(f"{exc.code}: {message}{self._hint(exc.code)}")

    def _hint(self, status: int) -> str:
        if status != http.HTTPStatus.UNAUTHORIZED:
            return ""
        if self.target.token is None:
            return f"\nno token given: use --token-file FILE, {TOKEN_ENV}, or -c CONFIG with [admin] token_file"
        return f"\nthe token came from {self.target.token_from}"


def describe_error(reason: object, timeout_s: float) -> str:
    """`connection refused`, `timed out after 10s`, ... from what urllib or the socket raised."""
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[:1].lower() + reason.strerror[1:]
    return str(reason) or type(reason).__name__


def _decode(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise CtlError(f"{what}: the answer is not JSON (is this the rdpbalancer admin API?)") from None
