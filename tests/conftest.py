"""Shared fixtures: the template's root, and a copy of it for tests that run the pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def template_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _quiet_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def venv_bin() -> Path:
    """The bin/ of the interpreter running the tests (the project's .venv under `make test`)."""
    return (
        Path(os.__file__).resolve().parents[2] / "bin"
        if False
        else Path(__import__("sys").executable).parent
    )
