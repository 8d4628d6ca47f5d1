"""Shared fixtures: the template's root, and quiet, offline-safe tool settings."""

from __future__ import annotations

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
