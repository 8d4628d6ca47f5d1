"""Shared fixtures: the template's root, and quiet, offline-safe tool settings; and how the
suite is split over pytest-xdist workers (tests/support/system.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import system

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def template_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _quiet_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        system.install_before_workers()  # in the controller, once, before the workers start


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):
        system.longest_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> system.GroupScheduling:
    return system.GroupScheduling(config, log)
