"""Fixtures for in-process serving tests: a model directory per docs/model-card.md, and ready
apps on each runtime behind a synchronous ASGI client (no socket, no server process)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import serving as fixtures


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
