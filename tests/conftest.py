"""Test-wide settings: async tests run on uvloop, the loop the balancer uses in production."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.loops import ClosingLoop
from tests.support.redis_server import RedisServer


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"uvloop": ClosingLoop}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session, started when a test first asks for it; tests
    keep apart with their own key prefix."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


# The tiers that run real services: `python3 -m pytest -m "not real_services"` leaves them out
# (the quick tier: unit and component); a plain run still runs everything.
_REAL_SERVICE_DIRS = frozenset({"e2e", "directory", "ha", "install", "browser", "bench"})
_TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.resolve().relative_to(_TESTS_DIR).parts[0]
        except ValueError:
            continue
        if tier in _REAL_SERVICE_DIRS:
            item.add_marker(pytest.mark.real_services)
