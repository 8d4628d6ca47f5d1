"""Fixtures for tests that run the real server process on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import serving as fixtures

# Re-exported for test modules that import them from this conftest.
REPO: Path = fixtures.REPO
Server = fixtures.Server
start_server = fixtures.start_server


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fixtures.build_model_dir(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def server(model_dir: Any, tmp_path: Path) -> Iterator[Any]:
    server = fixtures.start_server(model_dir.models, tmp_path)
    yield server
    server.stop()
