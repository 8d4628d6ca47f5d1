"""Root conftest: pytest accepts command-line options only from here (or from plugins)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("contract", "contract tests against a running server")
    group.addoption(
        "--base-url",
        default=os.environ.get("CONTRACT_BASE_URL"),
        help="server under test, e.g. http://127.0.0.1:8080 (or CONTRACT_BASE_URL)",
    )
    group.addoption(
        "--model-card",
        default="models/model.json",
        type=Path,
        help="the validated model's card (default: models/model.json)",
    )
    group.addoption(
        "--golden",
        default="reports/golden.json",
        type=Path,
        help="golden rows written by validate (default: reports/golden.json)",
    )
    group.addoption(
        "--image-labels",
        default=None,
        type=Path,
        help="JSON file of the image's labels; /metadata must agree with them",
    )
    group.addoption(
        "--container",
        default=os.environ.get("CONTRACT_CONTAINER"),
        help=(
            "id or name of the Docker container serving --base-url (or CONTRACT_CONTAINER): "
            "tests/hostile then also checks it was never OOM-killed or restarted and records "
            "its peak memory per case"
        ),
    )
    group.addoption(
        "--contract-params",
        default="params.yaml",
        type=Path,
        help="params file whose `contract` section holds the budgets",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/contract and tests/hostile need a server: collected only when --base-url (or the
    env var) is set."""
    if collection_path in (ROOT / "tests" / "contract", ROOT / "tests" / "hostile"):
        return config.getoption("--base-url") is None
    return None
