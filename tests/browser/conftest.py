"""Fixtures for the dashboard tests: real headless Chromium against a real balancer.

Fixtures:
    browser       one Chromium (Selenium + chromedriver) for the whole session; FAILS, never skips,
                  when chromium, chromedriver or selenium is missing
    balancer_loop a uvloop event loop in a background thread, for the session: the balancer and the
                  fake RDP servers live there, so the (blocking) Selenium calls in the tests never
                  stall them. `balancer_loop.run(coro)` runs a coroutine there and returns its result
    make_farm     ``make_farm(pools={"default": ["TS01", "TS02"]}, ...)`` -> Farm: fake servers and a
                  balancer with checks every 100 ms (rise 1, fall 1) and an admin token; torn down
                  after the test
    farm          the standard farm: pool "default" (TS01, TS02), pool "admins" (TS03), routes
                  admins (group Admins = carol), deny (mallory), everyone -> default
    page          the browser on the farm's dashboard, once every server is shown up; left for
                  about:blank after the test (its polling stops before the balancer does)

Tests are plain functions (no asyncio in the test itself); every wait is a WebDriverWait with a
deadline. Chromium's flags keep it off the network: no component updates, sync, QUIC or
background requests, a fresh profile per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rdpbalancer.app import Balancer
from rdpbalancer.config import parse_config
from tests.support.fakes import FakeRdpServer, RdpClient, rdp_connect, start_farm, where
from tests.support.loops import ClosingLoop

try:  # one guarded place: without selenium, the `browser` fixture fails every test with a clear message
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoAlertPresentException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    SELENIUM_MISSING = None
except ImportError as exc:
    SELENIUM_MISSING = str(exc)
    webdriver = Service = By = WebDriverWait = None  # type: ignore[assignment,misc]
    NoAlertPresentException = NoSuchElementException = StaleElementReferenceException = Exception  # type: ignore[misc]

__all__ = ["WAIT_S", "WINDOW", "By", "Farm", "NoAlertPresentException", "leave", "open_dashboard", "text_of",
           "wait_until"]

T = TypeVar("T")

CHROMIUM = Path(os.environ.get("RDPB_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RDPB_CHROMEDRIVER", "/usr/bin/chromedriver"))
WINDOW = (1400, 900)  # the size of docs/dashboard.png
WAIT_S = 10.0  # the page polls every second and checks run every 100 ms: 10 s is slack for a loaded CI box
LOOP_CALL_S = 15.0  # one coroutine handed to the balancer's loop (start, stop, a client connection)
API_TIMEOUT_S = 5.0
TOKEN = "dashboard-test-token-0123456789"  # >= 16 characters, as read_token requires
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--disable-extensions", "--disable-default-apps", "--no-default-browser-check", "--mute-audio",
    "--force-device-scale-factor=1", "--lang=en-US", f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
STANDARD_POOLS = {"default": ["TS01", "TS02"], "admins": ["TS03"]}
STANDARD_ROUTES = """
[groups.Admins]
members = ["carol"]

[[route]]
name = "admins"
groups = ["Admins"]
pool = "admins"

[[route]]
name = "blocked"
users = ["mallory"]
deny = true

[[route]]
name = "everyone"
pool = "default"
"""


# -- the balancer's event loop, in a thread ---------------------------------------------------------

class LoopThread:
    """A uvloop event loop running in a daemon thread; `run()` hands it a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = ClosingLoop()  # a failed test's open servers do not hang close()
        self.thread = threading.Thread(target=self.loop.run_forever, name="balancer-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = LOOP_CALL_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(LOOP_CALL_S)
        self.loop.close()


@pytest.fixture(scope="session")
def balancer_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


# -- the farm: fake RDP servers and a balancer ---------------------------------------------------

def dashboard_config(pools: dict[str, list[str]], servers: dict[str, FakeRdpServer], sticky: Path,
                     token_file: Path, *, admin_port: int = 0, routes: str = "", health: str = "",
                     caps: dict[str, int] | None = None, options: dict[str, str] | None = None) -> str:
    caps, options = caps or {}, options or {}
    pool_text = "".join(
        f'\n[[pool]]\nname = "{name}"\nservers = [\n'
        + "".join(f'  {{ name = "{n}", address = "{servers[n].address}"'
                  + (f", max_sessions = {caps[n]}" if n in caps else "")
                  + (f", {options[n]}" if n in options else "") + " },\n" for n in members) + "]\n"
        for name, members in pools.items())
    return f"""
[balancer]
listen = ["127.0.0.1:0"]
handshake_timeout = "1s"
connect_timeout = "2s"

[sticky]
path = "{sticky}"
sync = "normal"

[health]
check = "rdp"
interval = "100ms"
timeout = "1s"
rise = 1
fall = 1
{health}

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "{token_file}"
{pool_text}
{routes}
"""


@dataclass
class Farm:
    loop: LoopThread
    bal: Balancer
    servers: dict[str, FakeRdpServer]
    token: str = TOKEN
    clients: list[RdpClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.bal.admin.port}/"

    @property
    def port(self) -> int:
        return self.bal.addresses[0][1]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def connect(self, user: str) -> str:
        """One RDP connection through the balancer as `user`, closed again; returns the server."""
        return self.run(where(self.port, user))

    def refused(self, user: str) -> None:
        """A connection the balancer must close without an answer (denied, no server)."""
        async def attempt() -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                client = await rdp_connect(self.port, user)
                await client.close()
                raise AssertionError(f"{user!r} reached {client.server}; expected a refusal")
        self.run(attempt())

    def open_session(self, user: str) -> str:
        """A connection kept open (it counts as an active session) until the test ends."""
        client = self.run(rdp_connect(self.port, user))
        self.clients.append(client)
        return client.server

    def send_raw(self, data: bytes) -> None:
        """A client that sends `data` instead of a Connection Request, then waits to be closed."""
        async def junk() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(data)
            async with asyncio.timeout(LOOP_CALL_S):
                await reader.read()
            writer.close()
        self.run(junk())

    def api(self, path: str, *, method: str = "GET", body: Any = None, token: str | None = None) -> Any:
        request = urllib.request.Request(self.url.rstrip("/") + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as response:
            return json.load(response)

    def server(self, name: str) -> dict[str, Any]:
        return next(s for s in self.api("/api/v1/servers")["servers"] if s["name"] == name)

    async def close(self) -> None:
        try:
            for client in self.clients:
                await client.close()
            await self.bal.stop()
        finally:
            for server in self.servers.values():
                await server.stop()


@pytest.fixture
def make_farm(balancer_loop: LoopThread, tmp_path: Path) -> Iterator[Callable[..., Farm]]:
    farms: list[Farm] = []

    def make(pools: dict[str, list[str]] | None = None, *, routes: str = STANDARD_ROUTES, health: str = "",
             admin_port: int = 0, extra: str = "", caps: dict[str, int] | None = None,
             options: dict[str, str] | None = None) -> Farm:
        pools = pools or STANDARD_POOLS
        names = list(dict.fromkeys(n for members in pools.values() for n in members))
        servers = {s.name: s for s in balancer_loop.run(start_farm(*names))}
        token_file = tmp_path / f"token{len(farms)}"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        text = dashboard_config(pools, servers, tmp_path / f"sticky{len(farms)}.db", token_file,
                                admin_port=admin_port, routes=routes, health=health, caps=caps,
                                options=options) + extra
        farm = Farm(balancer_loop, Balancer(parse_config(text)), servers)
        farms.append(farm)  # stopped at teardown even if its start fails half-way
        balancer_loop.run(farm.bal.start())
        return farm

    yield make
    for farm in farms:
        balancer_loop.run(farm.close())


@pytest.fixture
def farm(make_farm: Callable[..., Farm]) -> Farm:
    return make_farm()


# -- the browser ------------------------------------------------------------------------------------

def _missing() -> str | None:
    if SELENIUM_MISSING is not None:
        return (f"the Python package 'selenium' is not installed ({SELENIUM_MISSING}): "
                "pip install selenium (it is in pyproject's test extras)")
    for what, path, package in (("Chromium", CHROMIUM, "chromium"), ("chromedriver", CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return (f"{what} not found at {path}: apt-get install {package} (scripts/install-test-deps.sh does), "
                    f"or point RDPB_{what.upper()} at it")
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    problem = _missing()
    if problem is not None:
        pytest.fail(f"dashboard tests need real headless Chromium: {problem}", pytrace=False)

    profile = tempfile.mkdtemp(prefix="rdpb-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors and CSP violations
    # An explicit driver path: Selenium Manager is never asked to find or download anything.
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as exc:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"cannot start headless Chromium ({CHROMIUM}) with {CHROMEDRIVER}: {exc}", pytrace=False)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any, farm: Farm) -> Iterator[Any]:
    yield open_dashboard(browser, farm)
    leave(browser)


def open_dashboard(browser: Any, farm: Farm) -> Any:
    """Load the farm's dashboard and wait until every server is shown up."""
    browser.get_log("browser")  # drop what earlier tests left in the console log
    browser.get(farm.url)
    names = set(farm.servers)
    wait_until(browser, lambda d: {e.get_attribute("data-server") for e in d.find_elements(
        By.CSS_SELECTOR, "tr[data-server][data-health='up']")} >= names, "every server shown up")
    return browser


def leave(browser: Any) -> None:
    """Stop the page's polling before its balancer goes away (no stray errors in the next test)."""
    with contextlib.suppress(Exception):
        browser.get("about:blank")


# -- explicit waits -----------------------------------------------------------------------------------

def wait_until(driver: Any, predicate: Callable[[Any], T], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll `predicate(driver)` until it returns something truthy; fail after `timeout_s`, saying `what`."""
    wait = WebDriverWait(driver, timeout_s, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    return wait.until(predicate, message=f"timed out after {timeout_s:.0f}s waiting for: {what}")


def text_of(driver: Any, css: str) -> str:
    """The rendered text (innerText) of the first element matching `css`, read in one call so
    a re-render between finding the element and reading it cannot make it stale."""
    text = driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.innerText;", css)
    if text is None:
        raise NoSuchElementException(f"no element matches {css!r}")
    return str(text)
