"""Fixtures for in-process serving tests: a model directory per docs/model-card.md, and ready
apps on each runtime behind a synchronous ASGI client (no socket, no server process)."""

from __future__ import annotations

import importlib.util
import shutil
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


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The breast-cancer model directory (models/ + metrics/), built once per session."""
    return fixtures.build_model_dir(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def fresh_model_dir(model_dir: Any, tmp_path: Path) -> Path:
    """A private copy of the model directory a test may damage."""
    shutil.copytree(model_dir.root, tmp_path / "copy")
    return tmp_path / "copy" / "models"


@pytest.fixture(scope="session", params=["onnx", "sklearn"])
def client(request: pytest.FixtureRequest, model_dir: Any) -> Iterator[Any]:
    """A ready app on each runtime: every protocol test runs against both."""
    client = fixtures.ready_client(model_dir.models, runtime=request.param, max_rows=500)
    yield client
    client.close()


@pytest.fixture(scope="session")
def onnx_client(model_dir: Any) -> Iterator[Any]:
    client = fixtures.ready_client(model_dir.models, runtime="onnx", max_rows=500)
    yield client
    client.close()
