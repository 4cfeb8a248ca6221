"""Fixtures for the end-to-end tests: one Xvfb + sesman + three xrdp per session (see harness.py).

Fixtures:
    e2e_env          the whole session environment (harness.E2EEnvironment)
    xrdp_farm        the three xrdp servers (harness.XrdpFarm); ``.servers``, ``.which_server(name)``
    which_server     ``which_server(client_hostname) -> server name | None``
    hostname         ``hostname("alice") -> "alice-7"``: a client hostname unique in the session
    run_client       ``run_client(host, port, user, password, client_hostname, timeout=20.0)``
                     -> harness.ClientResult; clients still open at the end of a test are closed
    run_clients      ``run_clients([harness.ClientSpec(...), ...], timeout=20.0)`` -> list of results:
                     starts the clients together (overlapping start-ups), then waits for each
    balancer_factory ``balancer_factory(servers=None, balance="leastconn", extra_toml="")``
                     -> harness.BalancerProcess (started and listening); stopped after the test
    xrdp_outage      ``with xrdp_outage("xrdp2", sig=SIGTERM) as server:`` that xrdp is stopped (port released)
                     for the block and runs again on the same port afterwards; ``xrdp_farm.start_server``
                     inside the block brings it back early. Any server still stopped at the end of
                     any e2e test (``xrdp_farm.stop_server``) is restarted, so the session farm is
                     whole for the next test.

A missing program or a broken set-up makes the tests ERROR/FAIL, never skip.
Set RDPB_E2E_KEEP=1 to keep the session's temp dir (configs, xrdp/sesman/client logs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.e2e import harness

_E2E_DIR = Path(__file__).resolve().parent
_setup_seconds: list[float] = []
_farms: list[harness.XrdpFarm] = []  # the session's farm, once a test has asked for it


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _setup_seconds:
        terminalreporter.write_line(
            f"e2e environment (Xvfb, sesman, 3 xrdp) set up in {_setup_seconds[0]:.2f}s"
        )


def _enter_or_fail(stack: contextlib.ExitStack) -> harness.E2EEnvironment:
    try:
        return stack.enter_context(harness.e2e_environment())
    except harness.HarnessError as exc:
        message = f"e2e environment could not be set up: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


@pytest.fixture(scope="session")
def e2e_env() -> Iterator[harness.E2EEnvironment]:
    with contextlib.ExitStack() as stack:
        env = _enter_or_fail(stack)
        _setup_seconds.append(env.setup_seconds)
        yield env


@pytest.fixture(scope="session")
def xrdp_farm(e2e_env: harness.E2EEnvironment) -> harness.XrdpFarm:
    _farms.append(e2e_env.farm)
    return e2e_env.farm


@pytest.fixture(scope="session")
def which_server(xrdp_farm: harness.XrdpFarm) -> Callable[[str], str | None]:
    return xrdp_farm.which_server


@pytest.fixture
def hostname(e2e_env: harness.E2EEnvironment) -> Callable[[str], str]:
    return e2e_env.clients.unique_hostname


@pytest.fixture
def run_client(e2e_env: harness.E2EEnvironment) -> Iterator[Callable[..., harness.ClientResult]]:
    opened: list[harness.ClientResult] = []

    def run(
        host: str,
        port: int,
        user: str,
        password: str | None,
        client_hostname: str,
        timeout: float = 20.0,
    ) -> harness.ClientResult:
        e2e_env.farm.ensure_running()
        client = e2e_env.clients.run_client(host, port, user, password, client_hostname, timeout)
        opened.append(client)
        return client

    yield run
    for client in opened:
        client.close()


@pytest.fixture
def run_clients(e2e_env: harness.E2EEnvironment) -> Iterator[Callable[..., list[harness.ClientResult]]]:
    opened: list[harness.ClientResult] = []

    def run(specs: Sequence[harness.ClientSpec], timeout: float = 20.0) -> list[harness.ClientResult]:
        e2e_env.farm.ensure_running()
        clients = e2e_env.clients.run_clients(specs, timeout)
        opened.extend(clients)
        return clients

    yield run
    for client in opened:
        client.close()


@pytest.fixture
def balancer_factory(
    tmp_path: Path, xrdp_farm: harness.XrdpFarm
) -> Iterator[Callable[..., harness.BalancerProcess]]:
    started: list[harness.BalancerProcess] = []

    def make(
        servers: Sequence[harness.XrdpServer] | None = None,
        *,
        balance: str = "leastconn",
        extra_toml: str = "",
    ) -> harness.BalancerProcess:
        workdir = tmp_path / f"balancer-{len(started) + 1}"
        balancer = harness.make_balancer(
            workdir,
            xrdp_farm.servers if servers is None else servers,
            balance=balance,
            extra_toml=extra_toml,
            start=False,
        )
        started.append(balancer)
        balancer.start()
        return balancer

    yield make
    for balancer in started:
        balancer.close()


@pytest.fixture
def xrdp_outage(
    xrdp_farm: harness.XrdpFarm,
) -> Callable[..., contextlib.AbstractContextManager[harness.XrdpServer]]:
    return xrdp_farm.server_stopped


@pytest.fixture(autouse=True)
def _restart_stopped_servers() -> Iterator[None]:
    """After each e2e test: start again any xrdp it stopped outside a ``with`` block."""
    yield
    for farm in _farms:
        for name in sorted(farm.stopped):
            farm.start_server(name)
