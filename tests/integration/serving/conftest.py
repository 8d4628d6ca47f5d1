"""Fixtures for tests that run the real server process on a free port."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_fixtures() -> ModuleType:
    """tests/serving_fixtures.py by path, registered as ``serving_fixtures`` so test modules can
    import it under any pytest import mode."""
    if "serving_fixtures" in sys.modules:
        return sys.modules["serving_fixtures"]
    path = Path(__file__).resolve().parents[2] / "serving_fixtures.py"
    spec = importlib.util.spec_from_file_location("serving_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serving_fixtures"] = module
    spec.loader.exec_module(module)
    return module


fixtures = _load_fixtures()
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
