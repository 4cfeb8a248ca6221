"""Test-wide settings: async tests run on uvloop, the loop the balancer uses in production."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.balancer import reserved_port
from tests.support.loops import ClosingLoop
from tests.support.redis_server import RedisServer


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"uvloop": ClosingLoop}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session, started when a test first asks for it; tests
    keep apart with their own key prefix."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def fixed_port() -> Iterator[Callable[[], int]]:
    """`fixed_port()`: a port for a test that must write one in a config before the process binds
    it (an address that must be the same after a restart or a handoff, or is itself the subject),
    held bound until the test ends: see `hold_port`."""
    with contextlib.ExitStack() as held:
        yield lambda: held.enter_context(reserved_port())


# The tiers that run real services: `python3 -m pytest -m "not real_services"` leaves them out
# (unit and component tests); a plain run still runs everything.
_REAL_SERVICE_DIRS = frozenset({"e2e", "directory", "ha", "install", "browser", "bench"})
# Modules whose tests run processes: balancers as child processes (floods, kill -9, a faketime
# clock, a handoff's successor, the admin API fuzzed), worker processes, the CLI (ctl, migrate,
# explain, run), the demo, libFuzzer, command sources' programs. Marked `processes`, as are single
# tests elsewhere that do (@pytest.mark.processes): `-m "not real_services and not processes"` is
# the quick tier, about a minute; `-m "not real_services"` runs these too.
_PROCESS_MODULES = frozenset({
    "component/test_admin_fuzz.py", "component/test_cli.py", "component/test_clock_steps.py",
    "component/test_command_source_bounds.py", "component/test_crash_burst.py", "component/test_ctl.py",
    "component/test_demo.py", "component/test_disk_faults.py", "component/test_explain.py",
    "component/test_floods.py", "component/test_handoff.py", "component/test_migrate_cli.py",
    "component/test_workers.py", "unit/test_fuzz_harness.py",
})
_TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            parts = item.path.resolve().relative_to(_TESTS_DIR).parts
        except ValueError:
            continue
        if parts[0] in _REAL_SERVICE_DIRS:
            item.add_marker(pytest.mark.real_services)
        if "/".join(parts) in _PROCESS_MODULES:
            item.add_marker(pytest.mark.processes)
