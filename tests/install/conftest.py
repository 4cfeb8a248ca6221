"""Session fixtures of the packaging tests: one wheelhouse and one venv per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.packaging import build_wheelhouse, make_venv


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rdpbalancer wheel built from this checkout, beside every dependency's wheel."""
    dest = tmp_path_factory.mktemp("wheelhouse")
    build_wheelhouse(dest)
    return dest


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """A fresh virtual environment with the wheel installed from the wheelhouse, nothing else."""
    return make_venv(tmp_path_factory.mktemp("venv") / "env", wheelhouse)
